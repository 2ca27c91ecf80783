/**
 * Reading a policy file into a validated Policy, or a list of problems each naming the file, the
 * path inside it and the reason (YAML syntax errors with line and column).
 */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { parseDocument } from 'yaml';
import { AligndError } from '../base/errors.js';
import { envRefName } from '../base/env.js';
import { policySchema, type Policy } from './schema.js';
import { readProbeFile, resolvePolicyPath } from './probes.js';
import { gateFeasibilityIssues } from './gate-feasibility.js';

export interface PolicyProblem {
  file: string;
  /** Dotted path inside the document (`gate.confidence`, `servers.0.url`), `(root)`, or `line L:C`. */
  path: string;
  reason: string;
}

export type PolicyResult =
  | { ok: true; policy: Policy; sha256: string; text: string; warnings: PolicyProblem[] }
  | { ok: false; problems: PolicyProblem[]; sha256: string };

export interface PolicyContext {
  /** Does the model's registry hold this version? (Pinned versions must exist.) */
  versionExists?: (model: string, version: string) => boolean;
  /** Treat unset secret environment variables as errors (the daemon) rather than warnings (`policy check`). */
  requireEnv?: boolean;
  env?: NodeJS.ProcessEnv;
}

export function parsePolicyText(text: string, file: string, ctx: PolicyContext = {}): PolicyResult {
  const sha256 = createHash('sha256').update(text).digest('hex');
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return {
      ok: false, sha256,
      problems: doc.errors.map((e) => ({ file, path: e.linePos?.[0] !== undefined ? `line ${e.linePos[0].line}:${e.linePos[0].col}` : '(yaml)', reason: `YAML: ${(e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '')}` })),
    };
  }
  const raw: unknown = doc.toJS();
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    return { ok: false, sha256, problems: [{ file, path: '(root)', reason: 'the policy must be a YAML mapping (model: ..., base_model: ..., ...)' }] };
  }
  const r = policySchema.safeParse(raw);
  if (!r.success) {
    return {
      ok: false, sha256,
      problems: r.error.issues.map((i) => ({
        file, path: i.path.length === 0 ? '(root)' : i.path.join('.'),
        reason: i.code === 'unrecognized_keys' ? `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `"${k}"`).join(', ')}` : i.message,
      })),
    };
  }
  const policy = r.data;
  const problems: PolicyProblem[] = [];
  const warnings: PolicyProblem[] = [];
  const env = ctx.env ?? process.env;
  if (policy.deployment.mode === 'pinned' && ctx.versionExists !== undefined && !ctx.versionExists(policy.model, policy.deployment.version)) {
    problems.push({ file, path: 'deployment.version', reason: `${policy.model} has no registry version ${policy.deployment.version}` });
  }
  if (policy.kl.anchor !== 'base' && ctx.versionExists !== undefined && !ctx.versionExists(policy.model, policy.kl.anchor)) {
    problems.push({ file, path: 'kl.anchor', reason: `${policy.model} has no registry version ${policy.kl.anchor}` });
  }
  for (const [i, s] of policy.servers.entries()) {
    const need = s.kind === 'webhook' ? { path: 'secret_env', name: s.secret_env } : s.kind === 'vllm' && s.api_key_env !== undefined ? { path: 'api_key_env', name: s.api_key_env } : undefined;
    if (need !== undefined && (env[need.name] ?? '') === '') {
      (ctx.requireEnv === true ? problems : warnings).push({ file, path: `servers.${i}.${need.path}`, reason: `environment variable ${need.name} is not set` });
    }
  }
  // Probe files and safety specs are read now, relative to the policy file: a missing or malformed
  // one is a problem with the policy, named like any other field.
  for (const set of ['benign', 'red_team'] as const) {
    const rel = policy.probes.files[set];
    if (rel === undefined) continue;
    const r = readProbeFile(resolvePolicyPath(file, rel));
    if (!r.ok) {
      problems.push(...r.problems.map((reason) => ({ file, path: `probes.${set}`, reason })));
      continue;
    }
    policy.probes[set].push(...r.probes);
    policy.probes.labelled.push(...r.labelled);
  }
  // Inline probe sets were counted by the schema; sets read from files only now.
  if (Object.keys(policy.probes.files).length > 0 && problems.length === 0) {
    problems.push(...gateFeasibilityIssues(policy).map((i) => ({ file, path: i.path.join('.'), reason: i.message })));
  }
  for (const [i, j] of policy.safety.judges.entries()) {
    if (j.kind !== 'openai_compatible') continue;
    if (j.spec_file !== undefined) {
      const abs = resolvePolicyPath(file, j.spec_file);
      try {
        if (readFileSync(abs, 'utf8').trim() === '') problems.push({ file, path: `safety.judges.${i}.spec_file`, reason: `${abs} is empty` });
        j.spec_file = abs;
      } catch (err) {
        problems.push({ file, path: `safety.judges.${i}.spec_file`, reason: `cannot read ${abs}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
      }
    }
    const name = envRefName(j.api_key);
    if (name !== undefined && (env[name] ?? '') === '') {
      (ctx.requireEnv === true ? problems : warnings).push({ file, path: `safety.judges.${i}.api_key`, reason: `environment variable ${name} is not set` });
    }
  }
  if (problems.length > 0) return { ok: false, problems, sha256 };
  return { ok: true, policy, sha256, text, warnings };
}

export function readPolicyFile(file: string, ctx: PolicyContext = {}): PolicyResult {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return { ok: false, sha256: '', problems: [{ file, path: '(file)', reason: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }] };
  }
  return parsePolicyText(text, file, ctx);
}

export function formatProblems(problems: PolicyProblem[]): string {
  return problems.map((p) => `${p.file}: ${p.path}: ${p.reason}`).join('\n');
}

/** Read and validate, throwing one POLICY_INVALID error listing every problem. */
export function loadPolicy(file: string, ctx: PolicyContext = {}): Policy {
  const r = readPolicyFile(file, ctx);
  if (!r.ok) throw new AligndError('POLICY_INVALID', `invalid policy:\n${formatProblems(r.problems)}`, { action: 'fix the listed fields; `alignd policy check FILE` re-checks' });
  return r.policy;
}
