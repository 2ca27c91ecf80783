/**
 * Packed batches and the response log-prob programs (issue 18): the batch layouts the packer
 * writes (one sequence per row, several per row, shared prompts), and — in float64 on the tiny
 * model, with and without an adapter, for each layout — the same sequence and token log-probs and
 * the same LoRA gradients as the plain program on a right-padded batch of the same sequences; the
 * float32 inference program against the plain one too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import * as ort from 'onnxruntime-node';
import { type Graph, type Value, constant, createSession, grad, ops as O, output, run, tensor, toOnnx } from '../../daemon/engine/index.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { type BaseWeights, type LoraValues, declareLora } from '../../daemon/model/forward-graph.js';
import { initLora, type LoraAdapter, type LoraConfig } from '../../daemon/model/lora.js';
import { batchFeeds, loadModel, loraFeeds, packedFeeds } from '../../daemon/model/model.js';
import type { HeadOptions } from '../../daemon/model/head.js';
import { buildLogProbs, logProbInputs } from '../../daemon/model/inference-programs.js';
import { type PackOptions, packSequences, type PackedBatch } from '../../daemon/model/packing.js';
import { packedInputs, responseLogProbs } from '../../daemon/model/response-programs.js';
import { createRng } from '../../daemon/base/random.js';
import { ensureTinyModel } from '../../daemon/model/tiny.js';
import type { PromptResponseTokens } from '../../daemon/model/tokenizer.js';
import { maxAbsDiff } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-packing-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const model = loadModel(ensureTinyModel(dir), { threads: 1 });
const { spec } = model;
const V = spec.vocabSize;
const loraCfg: LoraConfig = { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'down_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };

function adapter(seed: number, scale: number): LoraAdapter {
  const a = initLora(spec, loraCfg, seed);
  const rng = createRng(seed + 1);
  for (const p of a.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-scale, scale);
  return a;
}

const rng = createRng(18);
const tokens = (n: number): number[] => Array.from({ length: n }, () => 1 + Math.floor(rng.next() * (V - 1)));
const promptA = tokens(7);
const promptB = tokens(12);
/** Varied lengths; pairs of sequences share a prompt (chosen/rejected), one response is a single token. */
const seqs: PromptResponseTokens[] = [
  { ids: [...promptA, ...tokens(5)], promptLength: 7 },
  { ids: [...promptA, ...tokens(9)], promptLength: 7 },
  { ids: [...promptB, ...tokens(3)], promptLength: 12 },
  { ids: [...promptB, ...tokens(1)], promptLength: 12 },
  { ids: [...tokens(2), ...tokens(4)], promptLength: 2 },
  { ids: [...tokens(3), ...tokens(2)], promptLength: 3 },
  { ids: [...tokens(1), ...tokens(3)], promptLength: 1 },
];

/** Token log-probs of sequence s in a plain batch's [B, T] layout, in response order. */
function plainTokens(all: ArrayLike<number>, T: number, s: number, seq: PromptResponseTokens): number[] {
  const out: number[] = [];
  for (let t = seq.promptLength - 1; t < seq.ids.length - 1; t++) out.push(all[s * T + t]!);
  return out;
}

/** Token log-probs of sequence s in a packed batch's [N] layout (its owner's columns, in order). */
function packedTokens(all: ArrayLike<number>, b: PackedBatch, s: number): number[] {
  const N = b.responseIndex.length;
  const out: number[] = [];
  for (let n = 0; n < N; n++) if (b.responseOwner[s * N + n] === 1) out.push(all[n]!);
  return out;
}

t.test('one sequence per row: positions from 0, pads outside every segment, response positions only', async (t) => {
  const b = packSequences(seqs, model.padId);
  t.equal(b.rows, 7);
  t.equal(b.length, 16);
  t.equal(b.sequences, 7);
  t.equal(b.responseIndex.length, 5 + 9 + 3 + 1 + 4 + 2 + 3, 'one head position per response token');
  t.equal(b.realTokens, seqs.reduce((n, s) => n + s.ids.length, 0));
  t.same(Array.from(b.positionIds.subarray(0, 16)), [...Array(12).keys(), 0, 0, 0, 0], 'row 0: positions 0..11, then pads');
  t.same(Array.from(b.segmentIds.subarray(0, 16)), [...Array(12).fill(0), -1, -1, -1, -1], 'pads are in no segment');
  // Sequence 0's first response token is predicted at its last prompt position (6).
  t.equal(b.responseIndex[0], 6);
  t.equal(b.responseTargets[0], seqs[0]!.ids[7]);
  t.same(packedTokens(b.responseIndex, b, 3), [3 * 16 + 11], 'a one-token response: one position, the last prompt token');
  t.equal(b.responseOwner.length, 7 * 27, 'owners [S, N]');
  const cut = packSequences([seqs[1]!], model.padId, { maxLength: 10 });
  t.same([cut.truncatedPrompt, cut.truncatedResponse, cut.length], [[6], [0], 10], 'cut as packLogProbBatch cuts: prompt first');
});

t.test('packed rows: first-fit decreasing into rows as long as the longest sequence, positions restarting', async (t) => {
  const b = packSequences(seqs, model.padId, { pack: true });
  // Lengths 12, 16, 15, 13, 6, 5, 4 into rows of 16: [16] [15] [13] [12 4] [6 5].
  t.equal(b.rows, 5, 'five rows instead of seven');
  t.equal(b.length, 16);
  const last = 4 * 16;
  t.same(Array.from(b.positionIds.subarray(3 * 16, 4 * 16)), [...Array(12).keys(), 0, 1, 2, 3], 'the fourth row: two sequences, positions restarting');
  t.same(Array.from(b.positionIds.subarray(last, last + 16)), [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0], 'the last row: two, then pads');
  t.same(Array.from(b.segmentIds.subarray(last, last + 16)), [5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, -1, -1, -1, -1, -1], 'a segment each, pads in none');
  t.same(Array.from(b.inputIds.subarray(last + 6, last + 11)), seqs[5]!.ids, 'the second sequence of the row');
  t.same(packedTokens(b.responseTargets, b, 5), seqs[5]!.ids.slice(3), 'its response tokens are its targets');
  t.same(packedTokens(b.responseIndex, b, 5), [last + 8, last + 9], 'predicted from its last prompt token on');
  t.equal(b.realTokens, packSequences(seqs, model.padId).realTokens, 'the same real tokens');
});

t.test('shared prompts: the prompt once, then each response at the positions it would have alone', async (t) => {
  const b = packSequences(seqs, model.padId, { sharePrompts: true });
  // Segments: A + 5 + 9 (21), B + 3 + 1 (16), then 6, 5, 4: one per row.
  t.equal(b.rows, 5);
  t.equal(b.length, 21);
  t.same(Array.from(b.inputIds.subarray(0, 21)), [...promptA, ...seqs[0]!.ids.slice(7), ...seqs[1]!.ids.slice(7)], 'prompt, chosen, rejected');
  t.same(Array.from(b.positionIds.subarray(0, 21)), [...Array(12).keys(), ...[7, 8, 9, 10, 11, 12, 13, 14, 15]], 'the second response continues from the prompt');
  t.same(Array.from(b.branchIds.subarray(0, 21)), [...Array(7).fill(0), ...Array(5).fill(1), ...Array(9).fill(2)]);
  t.same(packedTokens(b.responseIndex, b, 1), [6, 12, 13, 14, 15, 16, 17, 18, 19], 'the second response is predicted from the shared last prompt token, then from its own tokens');
  t.same(packedTokens(b.responseTargets, b, 1), seqs[1]!.ids.slice(7));
  t.equal(b.rows * b.length - Array.from(b.segmentIds).filter((x) => x === -1).length, b.realTokens - 7 - 12, 'each shared prompt laid out once');
  const cut = packSequences([seqs[0]!, seqs[1]!], model.padId, { sharePrompts: true, maxLength: 14 });
  t.equal(cut.rows, 2, 'prompts cut differently are not shared');
});

interface Run { seq: Float64Array; tok: Float64Array; grads: Float64Array[] }

/**
 * The plain program (right-padded batch, head at every position) or the packed one in float64,
 * LoRA tensors as inputs: sequence and token log-probs, and the gradient of Σ r·seqLogps (r fixed
 * weights) with respect to every LoRA tensor.
 */
async function float64Run(ad: LoraAdapter, feeds: Record<string, ort.Tensor>, build: (g: Graph, base: BaseWeights, lv: LoraValues) => { seqLogps: Value; tokenLogps: Value }): Promise<Run> {
  const { g, base } = model.trainGraph('packing_check', 'float64');
  const lv = declareLora(g, spec, ad.config, 'input', 'float64');
  const params = [...lv.pairs.values()].flatMap((p) => [p.a, p.b]);
  const lp = build(g, base, lv);
  const weights = constant(g, tensor('float64', [seqs.length], seqs.map((_, i) => 0.5 + i)));
  const grads = grad(O.sumAll(O.mul(lp.seqLogps, weights)), params);
  output(lp.seqLogps, 'seq');
  output(lp.tokenLogps, 'tok');
  grads.forEach((d, i) => output(d, `grad_${i}`));
  // Level basic: at extended/all onnxruntime 1.30 fuses a recomputed float64 SiLU into QuickGelu, which has no double kernel.
  const session = await createSession(toOnnx(g), { threads: 1, graphOptimizationLevel: 'basic' });
  const f64 = (x: ort.Tensor): ort.Tensor => new ort.Tensor('float64', Float64Array.from(x.data as Float32Array), x.dims);
  const all: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries({ ...feeds, ...loraFeeds(ad) })) all[k] = v.type === 'float32' ? f64(v) : v;
  const out = await run(session, all);
  const get = (k: string): Float64Array => out[k]!.data as Float64Array;
  return { seq: get('seq'), tok: get('tok'), grads: params.map((_, i) => get(`grad_${i}`)) };
}

async function plainAndPacked(ad: LoraAdapter, packOpts: PackOptions, head: HeadOptions = {}): Promise<{ plain: Run; packed: Run; batch: PackedBatch; T: number }> {
  const plainBatch = packLogProbBatch(seqs, model.padId);
  const batch = packSequences(seqs, model.padId, packOpts);
  const plain = await float64Run(ad, batchFeeds(plainBatch), (g, base, lv) => buildLogProbs(base, lv, logProbInputs(g, 'float64')));
  const packed = await float64Run(ad, packedFeeds(batch), (g, base, lv) => responseLogProbs(base, lv, packedInputs(g, 'float64'), head));
  return { plain, packed, batch, T: plainBatch.length };
}

const layouts: [string, PackOptions, HeadOptions][] = [
  ['one sequence per row', {}, {}], ['several sequences per row', { pack: true }, {}], ['shared prompts, several per row', { pack: true, sharePrompts: true }, {}],
  // A train step of a big model: each layer and vocabulary block recomputed in the backward pass (384 = 3 × 100 + 84).
  ['shared prompts, recomputation, head over vocabulary blocks', { pack: true, sharePrompts: true }, { recompute: true, blockRows: 100 }],
];
for (const [label, ad] of [['fresh adapter (B = 0: the base model)', adapter(5, 0)], ['trained adapter', adapter(6, 0.3)]] as const) for (const [layout, opts, head] of layouts) {
  t.test(`float64, ${label}, ${layout}: packed log-probs and LoRA gradients equal the plain program's`, async (t) => {
    const { plain, packed, batch, T } = await plainAndPacked(ad, opts, head);
    t.ok(maxAbsDiff(plain.seq, packed.seq) < 1e-10, `sequence log-probs (max diff ${maxAbsDiff(plain.seq, packed.seq).toExponential(2)})`);
    seqs.forEach((s, i) => {
      const d = maxAbsDiff(plainTokens(plain.tok, T, i, s), packedTokens(packed.tok, batch, i));
      t.ok(d < 1e-10, `sequence ${i}: token log-probs (max diff ${d.toExponential(2)})`);
    });
    let num = 0, den = 0;
    plain.grads.forEach((gp, i) => gp.forEach((x, j) => { num += (x - packed.grads[i]![j]!) ** 2; den += x * x; }));
    t.ok(den > 0, 'the gradient is not zero');
    t.ok(Math.sqrt(num / den) < 1e-10, `LoRA gradients (relative difference ${Math.sqrt(num / den).toExponential(2)})`);
  });
}

t.test('float32 inference program: packed log-probs equal the plain ones, base and adapter', async (t) => {
  const ad = adapter(8, 0.3);
  for (const a of [null, ad]) {
    const plainBatch = packLogProbBatch(seqs, model.padId);
    const plain = await model.logprobs(plainBatch, a);
    const b = packSequences(seqs, model.padId, { pack: true, sharePrompts: true });
    const packed = await model.responseLogprobs(b, a);
    t.ok(maxAbsDiff(plain.seqLogps, packed.seqLogps) < 1e-5, `${a === null ? 'base' : 'adapter'}: sequence log-probs`);
    seqs.forEach((s, i) => t.ok(maxAbsDiff(plainTokens(plain.tokenLogps, plainBatch.length, i, s), packedTokens(packed.tokenLogps, b, i)) < 1e-5, `sequence ${i}: tokens`));
  }
});
