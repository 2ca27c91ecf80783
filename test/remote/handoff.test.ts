/**
 * The data hand-off of a remote round (daemon/remote/handoff.ts): the export writes what job.json
 * checksums, held-out rows never in the training file; the returned adapter is taken only when
 * its files are the ones the job hashed, its LoRA shape is the policy's, its tensors have the base
 * model's shapes and its values are finite; metrics.json must follow the contract.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportRound, fileSha256, readMetrics, returnedAdapterDir, takeReturnedAdapter } from '../../daemon/remote/handoff.js';
import { METRICS_FORMAT, type JobMetrics } from '../../daemon/remote/job-spec.js';
import { policySchema } from '../../daemon/policy/schema.js';
import { jobKnobs } from '../../daemon/loop/remote-round.js';
import { TINY_SEED, writeTinyModel } from '../../daemon/model/tiny.js';
import { loadModel } from '../../daemon/model/model.js';
import { initLora } from '../../daemon/model/lora.js';
import { writePeftAdapter } from '../../daemon/model/peft.js';
import type { Example } from '../../daemon/store/buffer.js';

const work = mkdtempSync(join(tmpdir(), 'alignd-handoff-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const base = join(work, 'base');
writeTinyModel(base, TINY_SEED);
const spec = loadModel(base).spec;
const policy = policySchema.parse({ model: 'tiny', base_model: { path: base, served_name: 'tiny-base' }, lora: { r: 8, alpha: 16, target_modules: ['q_proj', 'v_proj'] } });

const example = (id: number, heldout: boolean, type: 'pair' | 'kto' = 'pair'): Example => ({
  id, model: 'tiny', type, originKind: 'preference', eventSeq: id, eventIds: [`e${id}`],
  prompt: id % 2 === 0 ? `Question ${id}` : [{ role: 'user', content: `Question ${id}` }],
  chosen: type === 'pair' ? 'seven' : null, rejected: type === 'pair' ? 'no idea' : null, response: type === 'kto' ? 'seven' : null, label: type === 'kto' ? 'up' : null,
  margin: null, category: null, severity: null, user: 'u1', tenant: null, heldout,
});

/** A deployed adapter in a registry-like directory. */
const deployedDir = join(work, 'deployed');
writePeftAdapter(deployedDir, spec, initLora(spec, { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: 'tiny-base' }, 3));

t.test('export: job.json checksums every input; held-out rows stay out of the training file', async (t) => {
  const job = exportRound({ root: join(work, 'storage'), model: 'tiny', round: 7, policy, ...jobKnobs(policy), baseModel: '/cluster/models/tiny',
    window: [example(1, false), example(2, false), example(3, true)], heldout: [example(3, true)], deployedAdapterDir: deployedDir, anchorAdapterDir: null });
  const spec2 = JSON.parse(readFileSync(join(job.dir, 'job.json'), 'utf8')) as Record<string, unknown>;
  t.match(spec2, { format: 'alignd.trl-job/v1', model: 'tiny', round: 7, seed: 7, base_model: '/cluster/models/tiny', base_model_name_or_path: 'tiny-base',
    deployed_adapter: 'deployed', anchor_adapter: null, objective: { loss_type: 'sigmoid', beta: 0.1, lr_scheduler_type: 'cosine', max_length: 256 }, kl: { per_round: 0.05, check_steps: 5 } });
  const files = spec2['files'] as Record<string, string>;
  t.same(Object.keys(files).sort(), ['deployed/adapter_config.json', 'deployed/adapter_model.safetensors', 'heldout.jsonl', 'window.jsonl']);
  for (const [rel, h] of Object.entries(files)) t.equal(fileSha256(join(job.dir, rel)), h, `${rel} checksum`);
  const rows = readFileSync(join(job.dir, 'window.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: number; prompt: unknown });
  t.same(rows.map((r) => r.id), [1, 2], 'the held-out example is not in the training file');
  t.same(rows[0]!.prompt, [{ role: 'user', content: 'Question 1' }], 'chat prompts travel as messages');
  t.equal(job.relative.startsWith('tiny/r7-'), true);
});

/** A job directory as the job leaves it: out/adapter (written by `write`) and metrics.json hashing it. */
function returned(name: string, write: (dir: string) => void, edit: (m: JobMetrics) => void = () => {}): { jobDir: string; metrics: JobMetrics } {
  const jobDir = join(work, 'jobs', name);
  const adapter = returnedAdapterDir(jobDir);
  mkdirSync(adapter, { recursive: true });
  write(adapter);
  const metrics: JobMetrics = {
    format: METRICS_FORMAT, loss: 0.4, steps: 5, kept_step: 5, stop_reason: 'completed', reason: null, beta: 0.1,
    kl: { perRound: 0.01, cumulative: 0.02, sampledSequence: null }, kl_checks: [{ step: 5, perRound: 0.01, cumulative: 0.02, beta: 0.1 }],
    heldout: null, examples: 16, step_logs: [{ step: 5, loss: 0.4, lr: 1e-3, grad_norm: 1, beta: 0.1 }], versions: { trl: '1.16.0' }, wall_s: { train: 1 },
    adapter_files: { 'adapter_config.json': fileSha256(join(adapter, 'adapter_config.json')), 'adapter_model.safetensors': fileSha256(join(adapter, 'adapter_model.safetensors')) },
  };
  edit(metrics);
  writeFileSync(join(jobDir, 'out', 'metrics.json'), JSON.stringify(metrics));
  return { jobDir, metrics };
}
const lora = (r: number, seed: number, mutate: (b: Float32Array) => void = () => {}) => (dir: string): void => {
  const a = initLora(spec, { r, loraAlpha: 2 * r, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: 'tiny-base' }, seed);
  for (const p of a.pairs.values()) { p.b.fill(0.01); mutate(p.b); }
  writePeftAdapter(dir, spec, a);
};
const take = (jobDir: string, into: string): unknown => {
  const metrics = readMetrics(jobDir);
  return takeReturnedAdapter(returnedAdapterDir(jobDir), metrics, join(work, 'staging', into), spec, policy);
};

t.test('a good adapter is taken: copied, the job\'s checksums hold, shapes and values verified', async (t) => {
  const { jobDir } = returned('good', lora(8, 1));
  writeFileSync(join(returnedAdapterDir(jobDir), 'README.md'), 'PEFT writes a model card');
  const a = take(jobDir, 'good') as { config: { r: number }; pairs: Map<string, unknown> };
  t.equal(a.config.r, 8);
  t.equal(a.pairs.size, 2 * spec.numLayers);
  t.throws(() => readFileSync(join(work, 'staging', 'good', 'README.md')), 'only the files the job vouched for are taken');
});

t.test('a malformed adapter is refused with a reason a person can act on', async (t) => {
  t.throws(() => take(returned('rank', lora(4, 1)).jobDir, 'rank'), { code: 'ADAPTER_INVALID', message: /LoRA shape \(r=4.*is not the policy's \(r=8/ });
  t.throws(() => take(returned('nan', lora(8, 1, (b) => { b[3] = NaN; })).jobDir, 'nan'), { code: 'ADAPTER_INVALID', message: /NaN\/Inf values/ });
  const torn = returned('torn', lora(8, 1));
  writeFileSync(join(returnedAdapterDir(torn.jobDir), 'adapter_model.safetensors'), readFileSync(join(returnedAdapterDir(torn.jobDir), 'adapter_model.safetensors')).subarray(0, 100));
  t.throws(() => take(torn.jobDir, 'torn'), { code: 'ADAPTER_INVALID', message: /adapter_model\.safetensors has sha256 .* the job wrote .*torn or altered/ });
  const unlisted = returned('unlisted', lora(8, 1), (m) => { delete m.adapter_files['adapter_model.safetensors']; });
  t.throws(() => take(unlisted.jobDir, 'unlisted'), { message: /lists no checksum for adapter_model\.safetensors/ });
  const bad = returned('metrics', lora(8, 1), (m) => { (m as Record<string, unknown>)['kl'] = { perRound: 'x' }; });
  t.throws(() => readMetrics(bad.jobDir), { message: /metrics\.json does not follow alignd\.trl-metrics\/v1: kl\.perRound/ });
  t.throws(() => readMetrics(join(work, 'jobs', 'none')), { message: /wrote no metrics\.json/ });
});
