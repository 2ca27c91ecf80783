/**
 * Alignment's programs on the tiny model (built from daemon/model's graph functions): the gradient
 * of the full DPO loss (with the RPO term) with respect to the LoRA parameters equals central finite
 * differences of the same program's loss; the in-session exact KL is 0 against itself and equals
 * the plain-TS reference forward's KL against another adapter and against the base; the KL over
 * vocabulary blocks equals the plain one (two log-softmaxes over the whole vocabulary); the DPO
 * program on packed batches (head at response positions only) gives the plain program's loss and
 * gradients.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as ort from 'onnxruntime-node';
import { type ProgramInfo, type Session, declareInputs, f32, float32, gradProgram, i64, initAccumulator, initState, int64, names, numbers, ops as O, run } from '../../daemon/engine/index.js';
import { declareLora } from '../../daemon/model/forward-graph.js';
import { LOGPROB_INPUTS, buildLogProbs, logProbValues } from '../../daemon/model/inference-programs.js';
import { dpoObjective, nllTerm } from '../../daemon/align/losses.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { initLora, type LoraAdapter } from '../../daemon/model/lora.js';
import { batchFeeds, loraHostTensors, packedFeeds } from '../../daemon/model/model.js';
import { packSequences } from '../../daemon/model/packing.js';
import { referenceLogits } from '../../daemon/model/reference-forward.js';
import { writeTinyModel } from '../../daemon/model/tiny.js';
import { createRng } from '../../daemon/base/random.js';
import { alignModel } from '../../daemon/align/context.js';
import { heldoutKl } from '../../daemon/align/kl.js';
import { REF_PREFIX, klProgram } from '../../daemon/align/train-programs.js';
import { loraFeeds } from '../../daemon/model/model.js';
import { sequenceLogps } from '../../daemon/align/policy-logps.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-align-prog-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeTinyModel(dir);
const loraCfg = { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj', 'o_proj', 'down_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
const m = alignModel(dir, loraCfg, { threads: 2 });
const ckpt = m.ckpt;
const tok = ckpt.tokenizer!;

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
const batch = packLogProbBatch(seqs, m.model.padId);
const packed = packSequences(seqs, m.model.padId, { pack: true, sharePrompts: true });

/** Loss and accumulated gradients of one gradProgram run at `ad`. */
async function gradRun(info: ProgramInfo, session: Session, data: Record<string, ort.Tensor>, ad: LoraAdapter): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
  const state = initState(loraHostTensors(ad));
  const acc = initAccumulator(state);
  const feeds: Record<string, ort.Tensor> = { ...data };
  for (const p of info.params) { feeds[p] = state.params[p]!; feeds[names.acc(p)] = acc.sums[p]!; }
  const out = await run(session, feeds);
  const grads: Record<string, Float32Array> = {};
  for (const p of info.params) grads[p] = out[names.next(names.acc(p))]!.data as Float32Array;
  return { loss: numbers(out['loss']!)[0]!, grads };
}

t.test('gradient of the full DPO loss w.r.t. LoRA parameters equals finite differences', async (t) => {
  const adapter = randomAdapter(11);
  const refLp = await sequenceLogps(m, randomAdapter(12, 0.1), seqs);
  const P = pairs.length;
  const { info, session } = await m.dpo({ lossType: 'sigmoid', labelSmoothing: 0, rpoAlpha: 0.5, optimizer: {}, accumulate: true, recompute: false });
  const base = {
    ...packedFeeds(packed),
    chosen_index: i64([P], [0, 1]), rejected_index: i64([P], [2, 3]),
    ref_chosen: f32([P], refLp.slice(0, P)), ref_rejected: f32([P], refLp.slice(P)), beta: f32([], [2]),
  };
  const lossAt = (ad: LoraAdapter): ReturnType<typeof gradRun> => gradRun(info, session, base, ad);
  const at = await lossAt(adapter);
  const rng = createRng(99);
  const clone = (ad: LoraAdapter): LoraAdapter => ({ config: ad.config, pairs: new Map([...ad.pairs].map(([k, p]) => [k, { module: p.module, a: p.a.slice(), b: p.b.slice() }])) });
  const names2 = (path: string): { a: string; b: string } => ({ a: `${path}.lora_A`, b: `${path}.lora_B` });
  // Directional derivatives along random directions over every A and B.
  for (let trial = 0; trial < 3; trial++) {
    const dirs = new Map<string, { a: Float32Array; b: Float32Array }>();
    let analytic = 0;
    for (const [k, p] of adapter.pairs) {
      const da = Float32Array.from(p.a, () => rng.uniform(-1, 1));
      const db = Float32Array.from(p.b, () => rng.uniform(-1, 1));
      dirs.set(k, { a: da, b: db });
      da.forEach((x, i) => { analytic += x * at.grads[names2(k).a]![i]!; });
      db.forEach((x, i) => { analytic += x * at.grads[names2(k).b]![i]!; });
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
  t.ok(at.grads[names2('model.layers.0.self_attn.q_proj').a]!.some((x) => x !== 0), 'q_proj A gets a gradient');
});

t.test('the DPO program on packed batches gives the plain program\'s loss and gradients (IPO, with RPO)', async (t) => {
  const adapter = randomAdapter(13);
  const refLp = await sequenceLogps(m, randomAdapter(14, 0.1), seqs);
  const P = pairs.length;
  const pairFeeds = { chosen_index: i64([P], [0, 1]), rejected_index: i64([P], [2, 3]), ref_chosen: f32([P], refLp.slice(0, P)), ref_rejected: f32([P], refLp.slice(P)), beta: f32([], [0.5]) };
  // The plain program: right-padded rows, the head at every position, the response mask summing.
  const { g, base } = m.model.trainGraph('plain_dpo');
  const lv = declareLora(g, ckpt.spec, loraCfg, 'param');
  const decl = { ...LOGPROB_INPUTS, chosen_index: int64(['pairs']), rejected_index: int64(['pairs']), ref_chosen: float32(['pairs']), ref_rejected: float32(['pairs']), beta: float32([]) } as const;
  const x = declareInputs(g, decl);
  const lp = buildLogProbs(base, lv, logProbValues(x));
  const lengths = O.reduceSum(x.target_mask, [1], false);
  const chosen = O.gather(lp.seqLogps, x.chosen_index);
  const obj = dpoObjective({
    chosen, rejected: O.gather(lp.seqLogps, x.rejected_index), refChosen: x.ref_chosen, refRejected: x.ref_rejected,
    chosenLength: O.gather(lengths, x.chosen_index), rejectedLength: O.gather(lengths, x.rejected_index),
  }, { lossType: 'ipo', beta: x.beta, labelSmoothing: 0 });
  const plainInfo = gradProgram({ loss: O.add(obj.loss, nllTerm(chosen, O.gather(lengths, x.chosen_index), 0.5)), params: [...lv.pairs.values()].flatMap((p) => [p.a, p.b]), metrics: {}, inputs: decl });
  const plain = await gradRun(plainInfo, await m.model.compile(plainInfo.graph), { ...batchFeeds(batch), ...pairFeeds }, adapter);
  const prog = await m.dpo({ lossType: 'ipo', labelSmoothing: 0, rpoAlpha: 0.5, optimizer: {}, accumulate: true, recompute: false });
  const packedRun = await gradRun(prog.info, prog.session, { ...packedFeeds(packed), ...pairFeeds }, adapter);
  t.ok(Math.abs(plain.loss - packedRun.loss) <= 1e-5 * Math.max(1, Math.abs(plain.loss)), `loss ${packedRun.loss} vs plain ${plain.loss}`);
  let num = 0, den = 0;
  for (const [k, gp] of Object.entries(plain.grads)) gp.forEach((v, i) => { num += (v - packedRun.grads[k]![i]!) ** 2; den += v * v; });
  t.ok(den > 0 && Math.sqrt(num / den) < 1e-4, `gradients: relative difference ${Math.sqrt(num / den).toExponential(2)}`);
});

function referenceKl(p: LoraAdapter | null, q: LoraAdapter | null): number {
  let sum = 0, count = 0;
  const V = ckpt.spec.vocabSize;
  const logSoftmax = (x: Float32Array, t2: number): number[] => {
    const row = Array.from(x.slice(t2 * V, (t2 + 1) * V));
    const mx = Math.max(...row);
    const z = Math.log(row.reduce((s2, v) => s2 + Math.exp(v - mx), 0)) + mx;
    return row.map((v) => v - z);
  };
  for (let b = 0; b < batch.batch; b++) {
    const len = batch.attentionMask.slice(b * batch.length, (b + 1) * batch.length).reduce((x, y) => x + y, 0);
    const ids = Array.from(batch.inputIds.slice(b * batch.length, b * batch.length + len));
    const lp = referenceLogits(ckpt, ids, p);
    const lq = referenceLogits(ckpt, ids, q);
    for (let t2 = 0; t2 < len; t2++) {
      if (batch.targetMask[b * batch.length + t2] !== 1) continue;
      const a = logSoftmax(lp, t2), c = logSoftmax(lq, t2);
      sum += a.reduce((s2, v, i) => s2 + Math.exp(v) * (v - c[i]!), 0);
      count++;
    }
  }
  return sum / count;
}

t.test('exact KL: 0 against itself, the reference forward\'s value against another adapter and the base', async (t) => {
  const p = randomAdapter(21);
  const q = randomAdapter(22);
  t.ok(Math.abs(await heldoutKl(m, p, p, seqs, 8, 256)) < 1e-6, 'KL(π‖π) = 0');
  const got = await heldoutKl(m, p, q, seqs, 8, 256);
  const want = referenceKl(p, q);
  t.ok(got > 0 && Math.abs(got - want) < 1e-4 * Math.max(1, want), `KL ${got} vs reference ${want}`);
  const vsBase = await heldoutKl(m, p, null, seqs, 3, 256);
  const wantBase = referenceKl(p, null);
  t.ok(Math.abs(vsBase - wantBase) < 1e-4 * Math.max(1, wantBase), `KL vs base ${vsBase} vs reference ${wantBase} (chunks of 3 rows)`);
});

t.test('exact KL over vocabulary blocks (no [N, V] tensor) equals the plain full-vocabulary KL', async (t) => {
  const p = randomAdapter(31, 0.5);
  const q = randomAdapter(32, 0.5);
  const V = ckpt.spec.vocabSize;
  const klSums = async (blockRows: number | undefined, ref: LoraAdapter | null): Promise<{ sum: number; count: number; widest: number }> => {
    const g = klProgram(m.model, p.config, ref?.config ?? null, blockRows === undefined ? {} : { blockRows });
    const out = await run(await m.model.compile(g), { ...packedFeeds(packed), ...loraFeeds(p), ...(ref === null ? {} : loraFeeds(ref, REF_PREFIX)) });
    // The widest last dim of an [N, ·] value any node makes (logits at the response positions): V when the whole distribution exists.
    const widest = Math.max(...g.nodes.flatMap((n) => n.outputs.map((o) => g.values.get(o)?.shape)).map((sh) => (sh?.length === 2 && sh[0] === 'tokens' && typeof sh[1] === 'number' ? sh[1] : 0)));
    return { sum: numbers(out['kl_sum']!)[0]!, count: numbers(out['kl_count']!)[0]!, widest };
  };
  for (const ref of [q, null]) {
    const plain = await klSums(undefined, ref);
    t.ok(plain.sum > 0, `the plain KL is positive (${plain.sum})`);
    t.equal(plain.widest, V, 'the plain program holds [N, V] logits');
    // 384 = 3 × 100 + 84 (uneven last block) and 7 blocks of 55: the running maximum is rescaled across blocks.
    for (const rows of [100, 55]) {
      const blocks = await klSums(rows, ref);
      t.equal(blocks.count, plain.count);
      t.ok(Math.abs(blocks.sum - plain.sum) <= 1e-5 * Math.max(1, plain.sum), `${Math.ceil(V / rows)} blocks of ≤ ${rows} rows: ${blocks.sum} vs plain ${plain.sum} (${ref === null ? 'vs the base' : 'vs another adapter'})`);
      t.ok(blocks.widest < V, `no [N, V] value (widest last dim ${blocks.widest})`);
    }
  }
});
