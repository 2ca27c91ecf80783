/**
 * The vendored JSON schemas (test/fixtures/schemas/, see its README) behind one ajv instance, and
 * the small shared helpers of the deployment tests: strict YAML reading, `alignd policy check` as
 * a process, and vLLM's rank rule.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parseAllDocuments } from 'yaml';
import { mainJs, repoRoot } from '../harness/daemon.js';

export const schemaDir = join(repoRoot, 'test/fixtures/schemas');
export const K8S_VERSION = 'v1.35.0';

// ajv-formats is CommonJS; under NodeNext its default import is the module object.
const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (a: Ajv2020) => void;

const load = (p: string): Record<string, unknown> => JSON.parse(readFileSync(join(schemaDir, p), 'utf8')) as Record<string, unknown>;

// strict: false — the Kubernetes schemas carry generator keywords (x-kubernetes-*) ajv does not
// know; they constrain nothing that the standard keywords do not already say.
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
// OpenAPI integer/number formats used by Kubernetes: range checks on what are JSON numbers anyway.
ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isInteger(n) });
ajv.addFormat('double', { type: 'number', validate: () => true });
ajv.addFormat('byte', /^[A-Za-z0-9+/]*={0,2}$/);

const k8sDir = `kubernetes/${K8S_VERSION}`;
ajv.addSchema(load(`${k8sDir}/_definitions.json`));
const k8s = new Map<string, ValidateFunction>();
for (const f of readdirSync(join(schemaDir, k8sDir)).filter((x) => x.endsWith('.json') && !x.startsWith('_'))) {
  const schema = load(`${k8sDir}/${f}`);
  const props = schema['properties'] as Record<string, { enum?: string[] }>;
  const key = `${props['apiVersion']?.enum?.[0]}/${props['kind']?.enum?.[0]}`;
  k8s.set(key, ajv.compile(schema));
}
k8s.set('monitoring.coreos.com/v1/ServiceMonitor', ajv.compile(load('servicemonitor-monitoring.coreos.com-v1.json')));
const compose = ajv.compile(load('compose-spec.json'));

export interface Verdict { ok: boolean; errors: string[] }

function verdict(v: ValidateFunction, doc: unknown): Verdict {
  const ok = v(doc) as boolean;
  return { ok, errors: (v.errors ?? []).map((e: ErrorObject) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`) };
}

export function validateCompose(doc: unknown): Verdict {
  return verdict(compose, doc);
}

/** Validate a Kubernetes object by its apiVersion and kind; a kind with no vendored schema fails. */
export function validateK8s(doc: { apiVersion?: unknown; kind?: unknown }): Verdict {
  const v = k8s.get(`${String(doc.apiVersion)}/${String(doc.kind)}`);
  if (v === undefined) return { ok: false, errors: [`no vendored schema for ${String(doc.apiVersion)} ${String(doc.kind)}`] };
  return verdict(v, doc);
}

export const k8sKinds = (): string[] => [...k8s.keys()];

/** Every YAML document of a file; duplicate keys and syntax errors throw (yaml's defaults, made loud). */
export function readYamlDocs(path: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'), { uniqueKeys: true, prettyErrors: true });
  if (!Array.isArray(docs)) return [];
  return docs.map((d) => {
    if (d.errors.length > 0) throw new Error(`${path}: ${d.errors.map((e) => e.message).join('; ')}`);
    return d.toJS({ maxAliasCount: 100 }) as unknown;
  }).filter((d) => d !== null);
}

/**
 * `alignd policy check FILE`, the CLI users run, as a process. `dataDir` holds the (empty) registry
 * it looks pinned versions up in, so a developer's own ./.alignd never decides the outcome.
 */
export function policyCheck(file: string, dataDir: string): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [mainJs, 'policy', 'check', file, '--data-dir', dataDir], { encoding: 'utf8', env: { ...process.env, ALIGND_LOG_LEVEL: 'error' } });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

/** vLLM's --max-lora-rank values (docs/notes: serving.md). */
export const VLLM_RANKS = [1, 8, 16, 32, 64, 128, 256, 320, 512];

/** The --max-lora-rank that fits a LoRA of rank r without reserving more GPU memory than needed. */
export const maxLoraRankFor = (r: number): number | undefined => VLLM_RANKS.find((x) => x >= r);

/** The value after a flag in an argv list (`--flag value` or `--flag=value`). */
export function flagValue(argv: string[], flag: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === flag) return argv[i + 1];
    if (argv[i]?.startsWith(flag + '=')) return argv[i]?.slice(flag.length + 1);
  }
  return undefined;
}

/** Names of environment variables that hold secrets: their values must come from outside. */
export const SECRET_ENV_NAME = /(TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|PRIVATE_?KEY|CREDENTIALS?)/i;

/** [source, target] of a Compose service's volumes; the short syntax is SOURCE:TARGET[:MODE], SOURCE may be `${VAR:-default}`. */
export function volumeMounts(volumes: Array<string | { source?: string; target?: string }> | undefined): Array<[string, string]> {
  return (volumes ?? []).map((v) => {
    if (typeof v !== 'string') return [v.source ?? '', v.target ?? ''];
    const m = /^(\$\{[^}]*\}[^:]*|[^:]*):([^:]+)(?::(?:ro|rw))?$/.exec(v);
    if (m === null) throw new Error(`unreadable volume ${v}`);
    return [m[1] ?? '', m[2] ?? ''];
  });
}
