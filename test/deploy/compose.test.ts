/**
 * deploy/docker-compose.yml: valid under the Compose Specification schema (vendored), images
 * pinned, vLLM set up for runtime LoRA with a rank that fits the policy, the registry volume shared
 * the way the policy's path_map says, secrets only from the environment, ports on the host's
 * loopback only, the Kafka topics alignd uses created, and the policy it mounts accepted by
 * `alignd policy check`.
 */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { repoRoot } from '../harness/daemon.js';
import { SECRET_ENV_NAME, flagValue, maxLoraRankFor, policyCheck, readYamlDocs, validateCompose, volumeMounts } from './schemas.js';

const composePath = join(repoRoot, 'deploy/docker-compose.yml');
const docs = readYamlDocs(composePath);

interface Service {
  image?: string; build?: unknown; command?: string[] | string; entrypoint?: string[] | string;
  environment?: Record<string, string | number | boolean | null> | string[]; volumes?: Array<string | { source?: string; target?: string }>;
  ports?: Array<string | { host_ip?: string }>;
}
const compose = docs[0] as { services: Record<string, Service>; volumes?: Record<string, unknown> };
const svc = (name: string): Service => {
  const s = compose.services[name];
  if (s === undefined) throw new Error(`no service ${name}`);
  return s;
};
const list = (v: string[] | string | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : v.split(/\s+/));
const env = (s: Service): Record<string, string> => Object.fromEntries(
  Array.isArray(s.environment) ? s.environment.map((e) => [e.split('=')[0] ?? '', e.slice(e.indexOf('=') + 1)])
    : Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]));
const mounts = (s: Service): Array<[string, string]> => volumeMounts(s.volumes);

const alignd = svc('alignd');
const policyArg = flagValue(list(alignd.command), '--policy');
const policyHostDir = mounts(alignd).find(([, dst]) => dst === '/policies')?.[0];
const policyFile = policyArg !== undefined && policyHostDir !== undefined
  ? resolve(repoRoot, 'deploy', policyHostDir, policyArg.replace(/^\/policies\//, '')) : '';

t.test('one YAML document, valid under the Compose Specification', async (t) => {
  t.equal(docs.length, 1);
  const v = validateCompose(compose);
  t.ok(v.ok, 'valid', { errors: v.errors });
  // The schema is strict enough to catch a typo: the check can fail.
  const typo = structuredClone(compose) as { services: Record<string, Record<string, unknown>> };
  (typo.services['alignd'] ?? {})['restart_policy'] = 'always';
  t.notOk(validateCompose(typo).ok, 'an unknown service field is refused');
  const badPort = structuredClone(compose) as { services: Record<string, Record<string, unknown>> };
  (badPort.services['vllm'] ?? {})['ports'] = 'not-a-list';
  t.notOk(validateCompose(badPort).ok, 'a wrongly typed field is refused');
});

t.test('every image is pinned; Kafka is the official image on the 3.9 line', async (t) => {
  for (const [name, s] of Object.entries(compose.services)) {
    t.ok(s.image, `${name} names its image`);
    t.match(s.image ?? '', /:(v?\d+\.\d+\.\d+)$/, `${name}: ${s.image} pinned to a full version`);
  }
  t.match(svc('kafka').image, /^apache\/kafka:3\.9\.\d+$/, 'kafkajs 2.2.4 needs the 3.9 line (test/harness/README.md)');
  t.match(svc('vllm').image, /^vllm\/vllm-openai:v\d+\.\d+\.\d+$/);
  t.ok(alignd.build, 'alignd is built from the repository Dockerfile');
  const e = env(svc('kafka'));
  t.equal(e['KAFKA_PROCESS_ROLES'], 'broker,controller', 'KRaft, no ZooKeeper');
});

t.test('vLLM serves runtime LoRA with a rank that fits the policy', async (t) => {
  const vllm = svc('vllm');
  const argv = [...list(vllm.entrypoint), ...list(vllm.command)];
  t.ok(argv.includes('--enable-lora'), '--enable-lora');
  t.equal(env(vllm)['VLLM_ALLOW_RUNTIME_LORA_UPDATING'], 'True', 'the load/unload routes exist only with this');
  const policy = parseYaml(readFileSync(policyFile, 'utf8')) as { lora: { r: number }; base_model: { path: string; served_name?: string } };
  t.equal(Number(flagValue(argv, '--max-lora-rank')), maxLoraRankFor(policy.lora.r), `--max-lora-rank is the smallest vLLM rank >= lora.r ${policy.lora.r}`);
  t.equal(flagValue(argv, '--served-model-name'), policy.base_model.served_name, 'the adapters name the base vLLM serves');
  t.ok(argv.includes(policy.base_model.path), 'vLLM serves the checkpoint alignd trains on');
});

t.test('the registry volume is shared as the policy path_map says', async (t) => {
  const policy = parseYaml(readFileSync(policyFile, 'utf8')) as { servers: Array<{ kind: string; urls?: string[]; path_map?: { from: string; to: string } }> };
  const target = policy.servers.find((s) => s.kind === 'vllm');
  t.ok(target, 'the policy pushes to vLLM');
  const map = target?.path_map;
  const inAlignd = mounts(alignd).find(([, dst]) => dst === map?.from)?.[0];
  const inVllm = mounts(svc('vllm')).find(([, dst]) => dst === map?.to)?.[0];
  t.ok(inAlignd !== undefined && inAlignd === inVllm, `one volume: ${inAlignd} at ${map?.from} (alignd) and ${map?.to} (vLLM)`);
  t.ok(compose.volumes !== undefined && inAlignd !== undefined && inAlignd in compose.volumes, 'a named volume');
  t.match(target?.urls?.[0] ?? '', /^http:\/\/vllm:8000$/, 'the vLLM service by its compose name');
  t.ok(mounts(alignd).some(([, dst]) => dst === '/data'), 'alignd keeps its data in a volume');
});

t.test('secrets come from the environment; ports bind to the host loopback', async (t) => {
  for (const [name, s] of Object.entries(compose.services)) {
    for (const [k, v] of Object.entries(env(s))) {
      if (SECRET_ENV_NAME.test(k)) t.match(v, /^\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}$/, `${name}.${k} is interpolated, never a literal`);
    }
    for (const p of s.ports ?? []) {
      const hostIp = typeof p === 'string' ? p.split(':')[0] : p.host_ip;
      t.equal(hostIp, '127.0.0.1', `${name}: ${JSON.stringify(p)} published on 127.0.0.1 only`);
    }
  }
  t.match(env(alignd)['ALIGND_ADMIN_TOKEN'], /^\$\{ALIGND_ADMIN_TOKEN:\?/, 'compose refuses to start without a token');
});

t.test('Kafka: alignd consumes the topic kafka-init creates, with its dead-letter and promotions topics', async (t) => {
  const e = env(alignd);
  t.equal(e['ALIGND_KAFKA_BROKERS'], 'kafka:9092');
  const init = list(svc('kafka-init').command).join('\n');
  for (const topic of ['alignd.feedback', 'alignd.feedback.dlq', 'alignd.promotions']) {
    t.match(init, new RegExp(`\\bt ${topic.replace(/\./g, '\\.')} \\d+`), `creates ${topic}`);
  }
  t.equal(env(svc('kafka'))['KAFKA_AUTO_CREATE_TOPICS_ENABLE'], 'false');
});

t.test('the mounted policy passes alignd policy check', async (t) => {
  t.equal(policyArg, '/policies/assistant.yaml');
  t.ok(existsSync(policyFile), `${policyFile} exists`);
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-compose-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const r = policyCheck(policyFile, dataDir);
  t.equal(r.code, 0, 'alignd policy check accepts it', { out: r.out });
  t.match(r.out, /: ok — model assistant\b/);
  t.notMatch(r.out, /warning:/, 'without warnings');
});
