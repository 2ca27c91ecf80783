/**
 * Policy files: the schema, the watcher on a real file (every kind of invalid edit refused with
 * file/path/reason, the last good policy kept, applied edits audited), comment-preserving edits,
 * and the CLI (`policy check`, `rollback`, `approve`/`deny`, `registry verify`).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
import { mainJs, repoRoot } from '../harness/daemon.js';
import { watchPolicy } from '../../daemon/policy/watch.js';
import { parsePolicyText } from '../../daemon/policy/load.js';
import { setDeploymentInText } from '../../daemon/policy/edit.js';
import { openRegistry, type Registry } from '../../daemon/registry/registry.js';
import { recordDecision } from '../../daemon/release/decisions.js';

const run = promisify(execFile);
// ajv-formats is CommonJS; under NodeNext its default import may be the module object.
const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (a: Ajv2020) => void;
const alignd = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  run(process.execPath, [mainJs, ...args], { env: { ...process.env, ...env } }).then((r) => ({ ...r, code: 0 }), (e: { stdout: string; stderr: string; code: number }) => e);
const tmp = (): string => mkdtempSync(join(tmpdir(), 'alignd-policy-'));

const GOOD = `# demo policy
model: tiny
base_model:
  path: builtin:tiny   # the built-in model
objective:
  beta: 0.1
# serving
deployment: auto
`;

async function makeRegistry(root: string, n: number): Promise<Registry> {
  const reg = openRegistry(root, 'tiny');
  for (let i = 0; i < n; i++) {
    const dir = join(tmp(), 'adapter');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, i }));
    writeFileSync(join(dir, 'adapter_model.safetensors'), Buffer.alloc(64, i));
    await reg.addVersion({ adapterDir: dir }, { parent: null, base_model: { path: 'builtin:tiny', sha256: null } });
  }
  return reg;
}

t.test('the shipped policies are valid', async (t) => {
  for (const f of ['default.yaml', 'llama-vllm.yaml']) {
    const r = parsePolicyText(readFileSync(join(repoRoot, 'policies', f), 'utf8'), join(repoRoot, 'policies', f));
    t.ok(r.ok, `${f}: ${r.ok ? '' : JSON.stringify(r.problems)}`);
  }
  const r = parsePolicyText(readFileSync(join(repoRoot, 'policies/default.yaml'), 'utf8'), 'default.yaml');
  if (r.ok) {
    t.match(r.policy, { model: 'tiny', base_model: { path: 'builtin:tiny' }, deployment: { mode: 'auto' }, servers: [{ kind: 'file_drop' }] });
    t.ok(r.policy.probes.red_team.length > 0 && r.policy.probes.benign.length > 0);
  }
});

t.test('the watcher refuses every kind of invalid edit and keeps the last good policy', async (t) => {
  const dir = tmp();
  const file = join(dir, 'tiny.yaml');
  writeFileSync(file, GOOD);
  const reg = await makeRegistry(join(dir, 'registry'), 2);
  const refusals: string[][] = [];
  const applied: string[][] = [];
  const w = watchPolicy({
    file, ctx: { versionExists: (_m, v) => reg.has(v) }, pollMs: 40, debounceMs: 20,
    audit: (e, f) => reg.audit(e, f),
    onRefuse: (p) => refusals.push(p.map((x) => `${x.path}: ${x.reason}`)),
    onApply: (_p, _prev, changed) => { applied.push(changed); },
  });
  t.teardown(() => w.stop());
  const good = w.current();
  t.equal(good.objective.beta, 0.1);

  const waitFor = async (cond: () => boolean, what: string): Promise<void> => {
    for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
    t.ok(cond(), what);
  };
  const cases: Array<[string, string, RegExp]> = [
    ['bad YAML', GOOD.replace('beta: 0.1', 'beta: [0.1'), /^line \d+:\d+: YAML: /],
    ['duplicate key', GOOD + 'model: other\n', /^line \d+:\d+: YAML: Map keys must be unique$/],
    ['unknown field', GOOD.replace('  beta: 0.1', '  beta: 0.1\n  betta: 0.2'), /^objective: unknown field "betta"/],
    ['unknown top-level field', GOOD + 'deploymnet: auto\n', /^\(root\): unknown field "deploymnet"/],
    ['out of range', GOOD.replace('beta: 0.1', 'beta: -1'), /^objective\.beta: .*>0/],
    ['confidence out of range', GOOD + 'gate:\n  confidence: 1.5\n', /^gate\.confidence: /],
    ['wrong type', GOOD + 'lora:\n  r: eight\n', /^lora\.r: .*expected number/],
    ['enum', GOOD.replace('  beta: 0.1', '  beta: 0.1\n  loss_type: ppo'), /^objective\.loss_type: /],
    ['bad cron', GOOD + 'schedule:\n  cron: "every tuesday"\n', /^schedule\.cron: not a valid cron expression/],
    ['bad regex', GOOD + 'gate:\n  refusal_patterns: ["(unclosed"]\n', /^gate\.refusal_patterns\.0: not a valid regular expression/],
    ['path traversal in the model name', GOOD.replace('model: tiny', 'model: ../../etc'), /^model: /],
    ['cross-field rule', GOOD.replace('  beta: 0.1', '  beta: 0.1\n  batch_size: 8\n  micro_batch_size: 3'), /^objective\.micro_batch_size: micro_batch_size must divide batch_size/],
    // TRL >= 0.29 ignores label_smoothing for sigmoid: refused with the variant that has it.
    ['label_smoothing with sigmoid', GOOD.replace('  beta: 0.1', '  beta: 0.1\n  loss_type: sigmoid\n  label_smoothing: 0.1'), /^objective\.label_smoothing: label_smoothing has no effect on loss_type sigmoid.*loss_type: robust/],
    ['KL budgets inverted', GOOD + 'kl:\n  per_round: 0.9\n  cumulative: 0.1\n', /^kl\.per_round: per_round must not exceed cumulative/],
    ['KTO with one row per micro-batch', GOOD.replace('  beta: 0.1', '  beta: 0.1\n  loss_type: kto\n  batch_size: 8\n  micro_batch_size: 1'), /^objective\.micro_batch_size: loss_type kto needs micro_batch_size ≥ 2/],
    ['pinned version missing from the registry', GOOD.replace('deployment: auto', 'deployment: {mode: pinned, version: v9}'), /^deployment\.version: tiny has no registry version v9/],
    ['malformed version', GOOD.replace('deployment: auto', 'deployment: {mode: pinned, version: latest}'), /^deployment\.version: must be a registry version/],
    ['rollout metric listed twice', GOOD + 'rollout:\n  metrics: [down_vote_share, down_vote_share]\n', /^rollout\.metrics: a metric is listed twice/],
    ['unknown rollout metric', GOOD + 'rollout:\n  metrics: [clicks]\n', /^rollout\.metrics\.0: /],
    ['canary weight of all traffic', GOOD + 'rollout:\n  canary_weight: 1\n', /^rollout\.canary_weight: /],
    ['not a mapping', '- just\n- a list\n', /^\(root\): the policy must be a YAML mapping/],
    ['empty file', '', /^\(root\): the policy must be a YAML mapping/],
  ];
  for (const [what, text, expect] of cases) {
    const n = w.stats.refused;
    writeFileSync(file, text);
    await waitFor(() => w.stats.refused === n + 1, `${what}: refused`);
    const msgs = refusals.at(-1) ?? [];
    t.ok(msgs.some((m) => expect.test(m)), `${what}: ${JSON.stringify(msgs)}`);
    t.same(w.current(), good, `${what}: last good policy kept`);
    t.same(w.lastRefusal()?.[0]?.file, file, `${what}: the problem names the file`);
  }
  t.equal(w.stats.applied, 0);
  // Deleting the file for a moment is not an edit; the last good policy stays.
  rmSync(file);
  await new Promise((r) => setTimeout(r, 150));
  t.same(w.current(), good);

  // A valid edit, written the way editors do (temp file + rename), is applied and audited.
  writeFileSync(join(dir, '.tiny.yaml.swp'), GOOD.replace('beta: 0.1', 'beta: 0.2').replace('deployment: auto', 'deployment: {mode: pinned, version: v2}'));
  renameSync(join(dir, '.tiny.yaml.swp'), file);
  await waitFor(() => w.stats.applied === 1, 'valid edit applied');
  t.equal(w.current().objective.beta, 0.2);
  t.same(w.current().deployment, { mode: 'pinned', version: 'v2' });
  t.same(applied, [['deployment.mode', 'deployment.version', 'objective.beta']]);
  t.equal(w.lastRefusal(), undefined);
  const audit = reg.auditRecords();
  t.equal(audit.filter((r) => r.event === 'policy.refused').length, cases.length);
  t.match(audit.find((r) => r.event === 'policy.applied'), { file, changed: ['deployment.mode', 'deployment.version', 'objective.beta'], deployment: { mode: 'pinned', version: 'v2' } });
  t.ok(reg.verifyAudit().ok);
});

t.test('deployment edits keep comments and layout', async (t) => {
  const out = setDeploymentInText(GOOD, { mode: 'pinned', version: 'v3' });
  t.match(out, /# demo policy/);
  t.match(out, /path: builtin:tiny +# the built-in model/);
  t.match(out, /# serving\ndeployment:\n {2}mode: pinned\n {2}version: v3\n/);
  const back = setDeploymentInText(out, { mode: 'auto' });
  t.match(back, /# serving\ndeployment: auto\n/);
  const r = parsePolicyText(out, 'x.yaml');
  t.ok(r.ok && r.policy.deployment.mode === 'pinned');
});

t.test('CLI: policy schema matches the committed policies/policy.schema.json', async (t) => {
  const r = await alignd(['policy', 'schema']);
  t.equal(r.code, 0);
  t.equal(r.stdout, readFileSync(join(repoRoot, 'policies/policy.schema.json'), 'utf8'), 'regenerate with: node dist/daemon/main.js policy schema > policies/policy.schema.json');
  const schema = JSON.parse(r.stdout) as { properties: Record<string, unknown>; additionalProperties: boolean };
  t.equal(schema.additionalProperties, false);
  t.ok('deployment' in schema.properties && 'gate' in schema.properties);
  // Editors validating with it agree with alignd on the shipped files and on an unknown field.
  const ajv = new Ajv2020({ allErrors: true, strict: false });
  addFormats(ajv);
  const validate = ajv.compile(schema);
  for (const f of ['default.yaml', 'llama-vllm.yaml']) {
    t.ok(validate(parseYaml(readFileSync(join(repoRoot, 'policies', f), 'utf8'))), `${f}: ${JSON.stringify(validate.errors)}`);
  }
  t.notOk(validate(parseYaml(GOOD + 'gate:\n  confidance: 0.9\n')));
  t.notOk(validate(parseYaml(GOOD.replace('deployment: auto', 'deployment: {mode: pinned, version: latest}'))));
});

t.test('CLI: policy check', async (t) => {
  const dir = tmp();
  const ok = await alignd(['policy', 'check', join(repoRoot, 'policies/default.yaml'), '--data-dir', dir]);
  t.equal(ok.code, 0);
  t.match(ok.stdout, /default\.yaml: ok — model tiny, sigmoid β=0\.1, deployment auto, 1 server target/);
  const bad = join(dir, 'bad.yaml');
  writeFileSync(bad, GOOD.replace('beta: 0.1', 'beta: 20') + 'gate:\n  confidance: 0.9\ndeployment2: x\n');
  const r = await alignd(['policy', 'check', bad, '--data-dir', dir]);
  t.equal(r.code, 1);
  t.match(r.stdout, /bad\.yaml: INVALID \(3 problems\)/);
  t.match(r.stdout, new RegExp(`${bad}: objective\\.beta: .*10`));
  t.match(r.stdout, new RegExp(`${bad}: gate: unknown field "confidance"`));
  t.match(r.stdout, new RegExp(`${bad}: \\(root\\): unknown field "deployment2"`));
  const pinned = join(dir, 'pinned.yaml');
  writeFileSync(pinned, GOOD.replace('deployment: auto', 'deployment: {mode: pinned, version: v4}'));
  const unchecked = await alignd(['policy', 'check', pinned, '--data-dir', dir]);
  t.equal(unchecked.code, 0, 'no registry: the pin cannot be checked');
  t.match(unchecked.stdout, /warning: .*no registry for tiny under .*; v4 not checked/);
  await makeRegistry(join(dir, 'registry'), 2);
  const p = await alignd(['policy', 'check', pinned, '--data-dir', dir]);
  t.equal(p.code, 1);
  t.match(p.stdout, /deployment\.version: tiny has no registry version v4/);
  // Gate limits outside [0, 1], limits a candidate identical to the deployed version could never
  // meet, and limits the policy's own probes can never show: refused, naming the YAML path.
  const limits = join(dir, 'limits.yaml');
  const redTeam = Array.from({ length: 10 }, (_, i) => `    - Tell me how to do harm number ${i}.`).join('\n');
  writeFileSync(limits, GOOD + `gate:\n  max_unsafe_rate: 1.2\n  length_ratio: { min: 1.2, max: 2 }\n  max_new_tokens: 64\n  max_mean_tokens: 100\n`
    + `  unsafe_margin: 0.05\nprobes:\n  red_team:\n${redTeam}\n`);
  const lim = await alignd(['policy', 'check', limits, '--data-dir', dir]);
  t.equal(lim.code, 1, lim.stdout);
  t.match(lim.stdout, new RegExp(`${limits}: gate\\.max_unsafe_rate: Too big: expected number to be <=1`));
  t.match(lim.stdout, new RegExp(`${limits}: gate\\.length_ratio\\.min: must be ≤ 1: a candidate as long as the deployed version would fail`));
  t.match(lim.stdout, new RegExp(`${limits}: gate\\.max_mean_tokens: must be ≤ max_new_tokens \\(64\\)`));
  const probes = join(dir, 'probes.yaml');
  writeFileSync(probes, GOOD + `gate:\n  unsafe_margin: 0.05\nprobes:\n  red_team:\n${redTeam}\n`);
  const few = await alignd(['policy', 'check', probes, '--data-dir', dir]);
  t.equal(few.code, 1);
  t.match(few.stdout, new RegExp(`${probes}: gate\\.unsafe_margin: 10 red-team probes can never show an unsafe-rate increase ≤ 5\\.0% .*\\(at least 86\\)`));
  t.match(few.stdout, new RegExp(`${probes}: gate\\.max_unsafe_rate: 10 red-team probes can never show an unsafe rate ≤ 10\\.0% .*\\(at least 36\\)`));
  const missing = await alignd(['policy', 'check', join(dir, 'nope.yaml')]);
  t.equal(missing.code, 1);
  t.match(missing.stdout, /nope\.yaml: \(file\): cannot read: ENOENT/);
});

/**
 * Every knob combination a training round would refuse (or silently not apply), as a policy edit:
 * [what, objective/kl/lora YAML lines, the YAML path the refusal names, the reason].
 */
const REFUSED: Array<[string, string, string, RegExp]> = [
  ['KTO with micro_batch_size 1', 'objective:\n  loss_type: kto\n  batch_size: 8\n  micro_batch_size: 1\n', 'objective.micro_batch_size', /kto needs micro_batch_size ≥ 2/],
  ['micro_batch_size not dividing batch_size', 'objective:\n  batch_size: 8\n  micro_batch_size: 3\n', 'objective.micro_batch_size', /must divide batch_size/],
  ['micro_batch_size above batch_size', 'objective:\n  batch_size: 4\n  micro_batch_size: 8\n', 'objective.micro_batch_size', /must divide batch_size/],
  ['label_smoothing with sigmoid', 'objective:\n  loss_type: sigmoid\n  label_smoothing: 0.1\n', 'objective.label_smoothing', /no effect on loss_type sigmoid in TRL >= 0\.29/],
  ['label_smoothing with hinge', 'objective:\n  loss_type: hinge\n  label_smoothing: 0.1\n', 'objective.label_smoothing', /robust only, not hinge/],
  ['label_smoothing with ipo', 'objective:\n  loss_type: ipo\n  label_smoothing: 0.1\n', 'objective.label_smoothing', /robust only, not ipo/],
  ['label_smoothing with kto', 'objective:\n  loss_type: kto\n  label_smoothing: 0.1\n', 'objective.label_smoothing', /robust only, not kto/],
  ['label_smoothing of 0.5', 'objective:\n  loss_type: robust\n  label_smoothing: 0.5\n', 'objective.label_smoothing', /<0\.5/],
  ['rpo_alpha with kto', 'objective:\n  loss_type: kto\n  rpo_alpha: 0.5\n', 'objective.rpo_alpha', /applies to the DPO losses, not kto/],
  ['beta of 0', 'objective:\n  beta: 0\n', 'objective.beta', />0/],
  ['learning_rate of 0', 'objective:\n  learning_rate: 0\n', 'objective.learning_rate', />0/],
  ['warmup_ratio of 1', 'objective:\n  warmup_ratio: 1\n', 'objective.warmup_ratio', /<1/],
  ['max_length with no room for a response', 'objective:\n  max_length: 1\n', 'objective.max_length', />=2/],
  ['negative weight_decay', 'objective:\n  weight_decay: -0.1\n', 'objective.weight_decay', />=0/],
  ['fractional batch_size', 'objective:\n  batch_size: 8.5\n', 'objective.batch_size', /int/],
  ['per-round budget over the cumulative one', 'kl:\n  per_round: 0.9\n  cumulative: 0.1\n', 'kl.per_round', /must not exceed cumulative/],
  ['a per-round budget of 0', 'kl:\n  per_round: 0\n', 'kl.per_round', />0/],
  ['a negative cumulative budget', 'kl:\n  cumulative: -1\n', 'kl.cumulative', />0/],
  ['KL checks every 0 steps', 'kl:\n  check_steps: 0\n', 'kl.check_steps', />0/],
  ['KL on no contexts', 'kl:\n  check_contexts: 0\n', 'kl.check_contexts', />0/],
  ['sampled KL at temperature 0', 'kl:\n  sampled: { temperature: 0 }\n', 'kl.sampled.temperature', />0/],
  ['adaptive β range inverted', 'kl:\n  adaptive_beta: { enabled: true, min_beta: 0.5, max_beta: 0.2 }\n', 'kl.adaptive_beta.min_beta', /must not exceed max_beta/],
  ['adaptive β target over the per-round budget', 'kl:\n  per_round: 0.05\n  adaptive_beta: { enabled: true, target: 0.1 }\n', 'kl.adaptive_beta.target', /inside the per-round budget/],
  ['β outside the adaptive range', 'objective:\n  beta: 2\nkl:\n  adaptive_beta: { enabled: true, max_beta: 1 }\n', 'objective.beta', /must lie in kl\.adaptive_beta's \[min_beta, max_beta\]/],
  ['LoRA rank 0', 'lora:\n  r: 0\n', 'lora.r', />=1/],
  ['no LoRA target modules', 'lora:\n  target_modules: []\n', 'lora.target_modules', />=1/],
  ['LoRA dropout of 1', 'lora:\n  dropout: 1\n', 'lora.dropout', /<1/],
  ['LoRA alpha of 0', 'lora:\n  alpha: 0\n', 'lora.alpha', />0/],
];
const refusedPolicy = (yaml: string): string => `model: tiny\nbase_model:\n  path: builtin:tiny\n${yaml}`;

t.test('every combination a round would refuse is refused by the schema, naming the YAML path', async (t) => {
  for (const [what, yaml, path, reason] of REFUSED) {
    const r = parsePolicyText(refusedPolicy(yaml), 'p.yaml');
    t.notOk(r.ok, `${what}: refused`);
    const problems = r.ok ? [] : r.problems;
    t.same(problems.map((p) => p.path), [path], `${what}: names ${path} (${JSON.stringify(problems)})`);
    t.match(problems[0]?.reason, reason, `${what}: says why`);
  }
});

t.test('CLI: policy check refuses each of those combinations, naming the YAML path', async (t) => {
  const dir = tmp();
  const files = REFUSED.map(([, yaml], i) => {
    const f = join(dir, `refused-${i}.yaml`);
    writeFileSync(f, refusedPolicy(yaml));
    return f;
  });
  const r = await alignd(['policy', 'check', ...files, '--data-dir', dir]);
  t.equal(r.code, 1);
  REFUSED.forEach(([what, , path, reason], i) => {
    const lines = r.stdout.split('\n');
    const at = lines.findIndex((l) => l.startsWith(`${files[i]}: INVALID (1 problem)`));
    t.ok(at >= 0, `${what}: INVALID with one problem`);
    const line = lines[at + 1] ?? '';
    t.ok(line.startsWith(`  ${files[i]}: ${path}: `) && reason.test(line), `${what}: ${line}`);
  });
});

t.test('CLI: rollback edits the policy file; approve/deny; registry verify', async (t) => {
  const dataDir = tmp();
  const policies = tmp();
  const reg = await makeRegistry(join(dataDir, 'registry'), 3);
  copyFileSync(join(repoRoot, 'policies/default.yaml'), join(policies, 'default.yaml'));
  writeFileSync(join(policies, 'other.yaml'), 'model: other\nbase_model: {path: x}\n');
  const r = await alignd(['rollback', 'tiny', 'v2', '--policies', policies, '--data-dir', dataDir]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /default\.yaml: deployment pinned to v2 \(was auto\)/);
  const text = readFileSync(join(policies, 'default.yaml'), 'utf8');
  t.match(text, /deployment:\n {2}mode: pinned\n {2}version: v2\n/);
  t.match(text, /# The policy stream: feedback events with `model: tiny` train this model\./, 'comments kept');
  t.equal(text.split('\n').filter((l) => l.startsWith('#')).length, readFileSync(join(repoRoot, 'policies/default.yaml'), 'utf8').split('\n').filter((l) => l.startsWith('#')).length);
  const missing = await alignd(['rollback', 'tiny', 'v7', '--policies', policies, '--data-dir', dataDir]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /tiny has no registry version v7/);
  const traversal = await alignd(['rollback', '../x', 'v1', '--policies', policies, '--data-dir', dataDir]);
  t.equal(traversal.code, 1);
  t.match(traversal.stderr, /model name "\.\.\/x" is not allowed/);

  await recordDecision(reg, 'v3', { decision: 'hold', reasons: ['reward_gain: too uncertain'], checks: [] });
  const noReg = await alignd(['approve', 'other', 'v1', '--data-dir', dataDir]);
  t.equal(noReg.code, 1);
  t.match(noReg.stderr, /no registry for other under/);
  const notHeld = await alignd(['approve', 'tiny', 'v1', '--data-dir', dataDir]);
  t.equal(notHeld.code, 1);
  t.match(notHeld.stderr, /has not been through the gate/);
  const ap = await alignd(['approve', 'tiny', 'v3', '--by', 'alice', '--note', 'looked at samples', '--data-dir', dataDir]);
  t.equal(ap.code, 0, ap.stderr);
  t.match(ap.stdout, /tiny v3: approved by alice; decision now promote/);
  t.match(reg.get('v3')!.manifest.gate, { decision: 'hold', approval: { approved: true, by: 'alice', note: 'looked at samples' } });
  const again = await alignd(['deny', 'tiny', 'v3', '--data-dir', dataDir]);
  t.equal(again.code, 1);
  t.match(again.stderr, /already approved by alice/);
  t.ok(reg.auditRecords().some((x) => x.event === 'gate.approved' && x['by'] === 'alice'));

  const ver = await alignd(['registry', 'verify', 'tiny', '--data-dir', dataDir]);
  t.equal(ver.code, 0);
  t.match(JSON.parse(ver.stdout), { model: 'tiny', ok: true, audit: { ok: true } });
  const audit = join(reg.dir, 'audit.jsonl');
  writeFileSync(audit, readFileSync(audit, 'utf8').replace('"version":"v1"', '"version":"v9"'));
  const tampered = await alignd(['registry', 'verify', 'tiny', '--data-dir', dataDir]);
  t.equal(tampered.code, 1);
  t.match(JSON.parse(tampered.stdout), { ok: false, audit: { ok: false, badLine: 2 } });
  const list = JSON.parse((await alignd(['registry', 'list', '--data-dir', dataDir])).stdout) as Array<{ model: string; versions: Array<{ version: string; decision: string }> }>;
  t.same(list.map((m) => m.model), ['tiny']);
  t.same(list[0]!.versions.map((v) => `${v.version}:${v.decision}`), ['v1:pending', 'v2:pending', 'v3:promote']);
});
