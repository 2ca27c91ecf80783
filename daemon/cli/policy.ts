/**
 * CLI commands over policy files and the registry: `policy check`, `rollback`, `approve`,
 * `deny`, `registry list|verify`. They work on files and need no running daemon; a running
 * daemon picks policy edits up through its watcher.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { loadDaemonConfig } from '../config/process-config.js';
import { AligndError } from '../base/errors.js';
import { approveCandidate, denyCandidate, effectiveDecision } from '../release/decisions.js';
import { editDeployment } from '../policy/edit.js';
import { readPolicyFile, type PolicyContext } from '../policy/load.js';
import { judgeName, policyJsonSchema } from '../policy/schema.js';
import { parseVersion, validateModelName } from '../base/names.js';
import { listModels, openRegistry } from '../registry/registry.js';
import { parse } from './args.js';

const POLICY_USAGE = `Usage: alignd policy check FILE... [--data-dir DIR]
       alignd policy schema          (JSON Schema of policy files, for editors)
Validates policy files; with the registry under DIR (default: the daemon's data dir) pinned versions must exist.
Exit status 1 when any file is invalid.`;
const ROLLBACK_USAGE = `Usage: alignd rollback MODEL vN [--policy FILE | --policies DIR] [--data-dir DIR]
Pins MODEL to version vN by editing its policy file (deployment: {mode: pinned, version: vN}), comments kept.
The running daemon applies the edit: vN is served on every target. Undo with deployment: auto.`;
const APPROVE_USAGE = `Usage: alignd approve|deny MODEL vN [--by NAME] [--note TEXT] [--data-dir DIR]
Answers a candidate the gate held for a person, or a promoted version probation held at max_hours
(approve keeps it as stable; to refuse it, roll back: alignd rollback MODEL vPREVIOUS).`;
const REGISTRY_USAGE = `Usage: alignd registry list [MODEL] [--data-dir DIR]
       alignd registry verify MODEL [--data-dir DIR] [--head SEQ:HEAD]
  --head   an audit head published earlier (status, promotion announcements): the log must still reach it
Environment: ALIGND_AUDIT_KEY (the audit chain's HMAC key, to verify a keyed chain)`;

function registryRoot(dataDir: string | undefined, config: string | undefined): string {
  return join(dataDir ?? loadDaemonConfig(config).dataDir, 'registry');
}

function ctxFor(root: string): PolicyContext {
  return { versionExists: (model, version) => existsSync(join(root, model, 'versions', version)) };
}

export async function cmdPolicy(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { 'data-dir': { type: 'string' }, config: { type: 'string' }, help: { type: 'boolean' } }, POLICY_USAGE);
  const [sub, ...files] = positionals;
  if (values.help === true || sub === undefined) {
    process.stdout.write(POLICY_USAGE + '\n');
    return values.help === true ? 0 : 2;
  }
  if (sub === 'schema') {
    process.stdout.write(JSON.stringify(policyJsonSchema(), null, 2) + '\n');
    return 0;
  }
  if (sub !== 'check' || files.length === 0) throw new AligndError('CONFIG_INVALID', `unknown policy command '${sub}' or no FILE given\n\n${POLICY_USAGE}`);
  const root = registryRoot(values['data-dir'], values.config);
  let bad = 0;
  for (const file of files) {
    // Without a registry for the model (a fresh checkout, another machine) pinned versions cannot be checked.
    const unchecked: string[] = [];
    const r = readPolicyFile(file, {
      versionExists: (model, version) => {
        if (existsSync(join(root, model, 'versions'))) return existsSync(join(root, model, 'versions', version));
        unchecked.push(version);
        return true;
      },
    });
    if (!r.ok) {
      bad++;
      process.stdout.write(`${file}: INVALID (${r.problems.length} problem${r.problems.length === 1 ? '' : 's'})\n`);
      for (const p of r.problems) process.stdout.write(`  ${p.file}: ${p.path}: ${p.reason}\n`);
      continue;
    }
    const p = r.policy;
    const dep = p.deployment.mode === 'pinned' ? `pinned ${p.deployment.version}` : p.deployment.mode;
    process.stdout.write(`${file}: ok — model ${p.model}, ${p.objective.loss_type} β=${p.objective.beta}, deployment ${dep}, ${p.servers.length} server target${p.servers.length === 1 ? '' : 's'}, ${p.probes.benign.length} benign / ${p.probes.red_team.length} red-team probes, ${p.probes.labelled.length} labelled, judges ${p.safety.judges.map(judgeName).join(', ')} (${p.safety.combine})\n`);
    for (const w of r.warnings) process.stdout.write(`  warning: ${w.file}: ${w.path}: ${w.reason}\n`);
    for (const v of unchecked) process.stdout.write(`  warning: ${file}: no registry for ${p.model} under ${root}; ${v} not checked (pass --data-dir)\n`);
  }
  return bad === 0 ? 0 : 1;
}

/** The policy file in `dir` whose `model` is `model`. */
export function findPolicyFile(dir: string, model: string): string {
  if (!existsSync(dir)) throw new AligndError('CONFIG_INVALID', `policy directory ${dir} does not exist`, { action: 'pass --policies DIR or --policy FILE' });
  const matches: string[] = [];
  for (const name of readdirSync(dir).filter((n) => /\.ya?ml$/.test(n)).sort()) {
    try {
      const doc = parseYaml(readFileSync(join(dir, name), 'utf8')) as { model?: unknown } | null;
      if (doc?.model === model) matches.push(join(dir, name));
    } catch { /* an unparsable file is not the one we want; policy check reports it */ }
  }
  if (matches.length === 0) throw new AligndError('CONFIG_INVALID', `no policy file in ${dir} has model: ${model}`, { action: 'pass --policy FILE' });
  if (matches.length > 1) throw new AligndError('CONFIG_INVALID', `several policy files in ${dir} have model: ${model} (${matches.join(', ')})`, { action: 'keep one file per model, or pass --policy FILE' });
  return matches[0] as string;
}

export async function cmdRollback(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    policy: { type: 'string' }, policies: { type: 'string' }, 'data-dir': { type: 'string' }, config: { type: 'string' }, help: { type: 'boolean' },
  }, ROLLBACK_USAGE);
  if (values.help === true) {
    process.stdout.write(ROLLBACK_USAGE + '\n');
    return 0;
  }
  const [model, version] = positionals;
  if (model === undefined || version === undefined) throw new AligndError('CONFIG_INVALID', `MODEL and VERSION are required\n\n${ROLLBACK_USAGE}`);
  validateModelName(model);
  parseVersion(version);
  const root = registryRoot(values['data-dir'], values.config);
  if (!existsSync(join(root, model, 'versions', version))) {
    throw new AligndError('CONFIG_INVALID', `${model} has no registry version ${version} under ${root}`, { action: `list versions with: alignd registry list ${model}` });
  }
  const file = values.policy ?? findPolicyFile(values.policies ?? process.env['ALIGND_POLICIES_DIR'] ?? 'policies', model);
  const before = readPolicyFile(file);
  const was = before.ok ? (before.policy.deployment.mode === 'pinned' ? `pinned ${before.policy.deployment.version}` : before.policy.deployment.mode) : 'invalid';
  editDeployment(file, { mode: 'pinned', version }, ctxFor(root));
  process.stdout.write(`${file}: deployment pinned to ${version} (was ${was}); a running daemon serves ${model}-${version} on every target once it reloads the file\n`);
  return 0;
}

export async function cmdApprove(argv: string[], approve: boolean): Promise<number> {
  const { values, positionals } = parse(argv, {
    by: { type: 'string' }, note: { type: 'string' }, 'data-dir': { type: 'string' }, config: { type: 'string' }, help: { type: 'boolean' },
  }, APPROVE_USAGE);
  if (values.help === true) {
    process.stdout.write(APPROVE_USAGE + '\n');
    return 0;
  }
  const [model, version] = positionals;
  if (model === undefined || version === undefined) throw new AligndError('CONFIG_INVALID', `MODEL and VERSION are required\n\n${APPROVE_USAGE}`);
  const root = registryRoot(values['data-dir'], values.config);
  validateModelName(model);
  if (!existsSync(join(root, model, 'versions'))) throw new AligndError('CONFIG_INVALID', `no registry for ${model} under ${root}`, { action: 'pass --data-dir (the daemon\'s data directory)' });
  const reg = openRegistry(root, model);
  const by = values.by ?? process.env['USER'] ?? 'cli';
  const v = await (approve ? approveCandidate : denyCandidate)(reg, version, by, values.note);
  const probation = v.manifest.probation?.status;
  process.stdout.write(`${model} ${version}: ${approve ? 'approved' : 'denied'} by ${by}; ${probation === undefined ? `decision now ${effectiveDecision(v)}` : `probation ${probation}`}\n`);
  return 0;
}

export async function cmdRegistry(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { 'data-dir': { type: 'string' }, config: { type: 'string' }, head: { type: 'string' }, help: { type: 'boolean' } }, REGISTRY_USAGE);
  const [sub, model] = positionals;
  if (values.help === true || sub === undefined) {
    process.stdout.write(REGISTRY_USAGE + '\n');
    return values.help === true ? 0 : 2;
  }
  const root = registryRoot(values['data-dir'], values.config);
  if (sub === 'list') {
    const models = model === undefined ? listModels(root) : [validateModelName(model)].filter((m) => existsSync(join(root, m, 'versions')));
    const out = models.map((m) => {
      const reg = openRegistry(root, m);
      const d = reg.deployment();
      return {
        model: m, deployed: d?.desired ?? null, complete: d?.complete ?? null, targets: d?.targets ?? {},
        versions: reg.list().map((v) => ({ version: v.version, parent: v.manifest.parent, created_at: v.manifest.created_at, decision: effectiveDecision(v),
          probation: v.manifest.probation?.status ?? null, adapter_sha256: v.manifest.adapter_sha256 })),
      };
    });
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
    return 0;
  }
  if (sub === 'verify' && model !== undefined) {
    validateModelName(model);
    if (!existsSync(join(root, model, 'versions'))) throw new AligndError('CONFIG_INVALID', `no registry for ${model} under ${root}`, { action: 'pass --data-dir (the daemon\'s data directory)' });
    const reg = openRegistry(root, model);
    let expect: { seq: number; head: string } | undefined;
    if (values.head !== undefined) {
      const m = /^(\d+):(\S+)$/.exec(values.head);
      if (m === null) throw new AligndError('CONFIG_INVALID', `--head must be SEQ:HEAD (as status prints them), got ${JSON.stringify(values.head)}`);
      expect = { seq: Number(m[1]), head: m[2]! };
    }
    const audit = reg.verifyAudit(expect);
    const versions = reg.list().map((v) => ({ version: v.version, ...reg.verifyVersion(v.version) }));
    const ok = audit.ok && versions.every((v) => v.ok);
    process.stdout.write(JSON.stringify({ model, ok, audit, versions }, null, 2) + '\n');
    return ok ? 0 : 1;
  }
  throw new AligndError('CONFIG_INVALID', `unknown registry command '${sub}'\n\n${REGISTRY_USAGE}`);
}
