/**
 * Alignment's model programs on the tiny model: batched response log-probs with a LoRA adapter
 * equal the plain-TS reference forward; the gradient of the full DPO loss with respect to the
 * LoRA parameters equals central finite differences of the same program's loss; exact KL of an
 * adapter against itself is 0 and against another adapter matches the reference forward's.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { createSession, f32, i64, initAccumulator, initState, names, numbers, run, toOnnx } from '../../daemon/engine/index.js';
import { loadCheckpoint } from '../../daemon/model/checkpoint.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { initLora, type LoraAdapter } from '../../daemon/model/lora.js';
import { referenceBatchLogProbs, referenceLogits } from '../../daemon/model/reference-forward.js';
import { writeTinyModel } from '../../daemon/model/tiny.js';
import { createRng } from '../../daemon/model/rng.js';
import { adapterFeeds, batchFeeds, computeLogps, dpoProgram, klSession, logpsSession } from '../../daemon/align/programs.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-align-fwd-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeTinyModel(dir);
const ckpt = loadCheckpoint(dir);
const tok = ckpt.tokenizer!;
const loraCfg = { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj', 'o_proj', 'down_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };

function randomAdapter(seed: number, scale = 0.2): LoraAdapter {
  const a = initLora(ckpt.spec, loraCfg, seed);
  const rng = createRng(seed + 1);
  for (const p of a.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-scale, scale);
  return a;
}

const pairs = [
  { prompt: 'Say hi', chosen: 'hello there', rejected: 'go away' },
  { prompt: [{ role: 'user', content: 'What is 2+2?' }], chosen: 'four', rejected: 'five, maybe six' },
];
const seqs = [...pairs.map((p) => tok.promptResponse(p.prompt, p.chosen)), ...pairs.map((p) => tok.promptResponse(p.prompt, p.rejected))];
const batch = packLogProbBatch(seqs, tok.padTokenId!);
const programs = { ckpt, lora: loraCfg, runtime: { threads: 2 } };

t.test('batched response log-probs with LoRA equal the reference forward', async (t) => {
  const adapter = randomAdapter(7);
  const s = await logpsSession(programs);
  const got = await computeLogps(programs, s, adapter, batch);
  const want = referenceBatchLogProbs(ckpt, batch, adapter).sums;
  got.forEach((x, i) => t.ok(Math.abs(x - want[i]!) < 2e-3, `row ${i}: ${x} vs ${want[i]}`));
});

t.test('gradient of the full DPO loss w.r.t. LoRA parameters equals finite differences', async (t) => {
  const adapter = randomAdapter(11);
  const ref = randomAdapter(12, 0.1);
  const ls = await logpsSession(programs);
  const refLp = await computeLogps(programs, ls, ref, batch);
  const P = pairs.length;
  const info = dpoProgram(programs, { lossType: 'sigmoid', labelSmoothing: 0, rpoAlpha: 0.5, optimizer: {}, accumulate: true });
  const s = await createSession(toOnnx(info.graph).bytes, { threads: 2 });
  const base = {
    ...batchFeeds(ckpt, batch),
    chosen_index: i64([P], [0, 1]), rejected_index: i64([P], [2, 3]),
    ref_chosen: f32([P], refLp.slice(0, P)), ref_rejected: f32([P], refLp.slice(P)), beta: f32([], [2]),
  };
  const lossAt = async (ad: LoraAdapter): Promise<{ loss: number; grads: Record<string, Float32Array> }> => {
    const state = initState(Object.fromEntries(Object.entries(adapterFeeds(ad)).map(([k, v]) => [k, { dtype: 'float32' as const, dims: [...v.dims], data: v.data as Float32Array }])));
    const acc = initAccumulator(state);
    const feeds: Record<string, ort.Tensor> = { ...base };
    for (const p of info.params) { feeds[p] = state.params[p]!; feeds[names.acc(p)] = acc.sums[p]!; }
    const out = await run(s, feeds);
    const grads: Record<string, Float32Array> = {};
    for (const p of info.params) grads[p] = out[names.next(names.acc(p))]!.data as Float32Array;
    return { loss: numbers(out['loss']!)[0]!, grads };
  };
  const at = await lossAt(adapter);
  const rng = createRng(99);
  // Directional derivatives along random directions, plus single coordinates of A and B.
  const clone = (ad: LoraAdapter): LoraAdapter => ({ config: ad.config, pairs: new Map([...ad.pairs].map(([k, p]) => [k, { module: p.module, a: p.a.slice(), b: p.b.slice() }])) });
  for (let trial = 0; trial < 3; trial++) {
    const dirs = new Map<string, { a: Float32Array; b: Float32Array }>();
    let analytic = 0;
    for (const [k, p] of adapter.pairs) {
      const da = Float32Array.from(p.a, () => rng.uniform(-1, 1));
      const db = Float32Array.from(p.b, () => rng.uniform(-1, 1));
      dirs.set(k, { a: da, b: db });
      const ga = at.grads[`lora.${k}.A`]!;
      const gb = at.grads[`lora.${k}.B`]!;
      da.forEach((x, i) => { analytic += x * ga[i]!; });
      db.forEach((x, i) => { analytic += x * gb[i]!; });
    }
    const h = 1e-3;
    const shifted = async (sign: number): Promise<number> => {
      const ad = clone(adapter);
      for (const [k, p] of ad.pairs) {
        const d = dirs.get(k)!;
        p.a.forEach((_, i) => { p.a[i] = p.a[i]! + sign * h * d.a[i]!; });
        p.b.forEach((_, i) => { p.b[i] = p.b[i]! + sign * h * d.b[i]!; });
      }
      return (await lossAt(ad)).loss;
    };
    const numeric = ((await shifted(1)) - (await shifted(-1))) / (2 * h);
    t.ok(Math.abs(numeric - analytic) <= 5e-3 * Math.max(1e-3, Math.abs(analytic)), `direction ${trial}: analytic ${analytic} vs numeric ${numeric}`);
  }
  t.ok(Math.abs(at.grads[`lora.model.layers.0.self_attn.q_proj.A`]!.reduce((s, x) => s + Math.abs(x), 0)) > 0, 'q_proj A gets a gradient');
});

t.test('exact KL: 0 against itself, the reference forward\'s value against another adapter', async (t) => {
  const p = randomAdapter(21);
  const q = randomAdapter(22);
  const s = await klSession(programs, loraCfg);
  const feeds = { ...batchFeeds(ckpt, batch), ...adapterFeeds(p, 'lora'), ...adapterFeeds(p, 'ref') };
  const self = await run(s, feeds);
  t.ok(Math.abs(numbers(self['kl_sum']!)[0]!) < 1e-5, 'KL(π‖π) = 0');
  const other = await run(s, { ...feeds, ...adapterFeeds(q, 'ref') });
  let want = 0;
  const V = ckpt.spec.vocabSize;
  for (let b = 0; b < batch.batch; b++) {
    const len = batch.attentionMask.slice(b * batch.length, (b + 1) * batch.length).reduce((x, y) => x + y, 0);
    const ids = Array.from(batch.inputIds.slice(b * batch.length, b * batch.length + len));
    const lp = referenceLogits(ckpt, ids, p);
    const lq = referenceLogits(ckpt, ids, q);
    for (let t2 = 0; t2 < len; t2++) {
      if (batch.targetMask[b * batch.length + t2] !== 1) continue;
      const ls = (x: Float32Array): number[] => { const row = Array.from(x.slice(t2 * V, (t2 + 1) * V)); const m = Math.max(...row); const z = Math.log(row.reduce((s2, v) => s2 + Math.exp(v - m), 0)) + m; return row.map((v) => v - z); };
      const a = ls(lp), c = ls(lq);
      want += a.reduce((s2, v, i) => s2 + Math.exp(v) * (v - c[i]!), 0);
    }
  }
  const got = numbers(other['kl_sum']!)[0]!;
  t.ok(got > 0 && Math.abs(got - want) < 1e-3 * Math.max(1, want), `KL ${got} vs reference ${want}`);
  t.equal(numbers(other['kl_count']!)[0], batch.targetMask.reduce((x, y) => x + y, 0));
});
