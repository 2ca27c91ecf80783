// The ONNX model programs on the tiny built-in model (written to a temp dir and loaded by the
// same loader a user's checkpoint goes through) against the plain-TS reference forward:
// batched log-probs, last-token hidden states, vocabulary log-probs and exact KL, KV-cache
// generation (greedy and seeded sampling), LoRA gradients by float64 finite differences, and a
// train step built from the same graph functions.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import {
  createSession, initState, isExternal, ops as O, output, toOnnx, trainProgram, trainStep,
} from '../../daemon/engine/index.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { declareLora } from '../../daemon/model/forward-graph.js';
import { initLora, type LoraAdapter, type LoraConfig } from '../../daemon/model/lora.js';
import { adapterFromTensors, batchFeeds, loadModel, loraFeeds, loraHostTensors } from '../../daemon/model/model.js';
import { buildLogProbs, buildProgram, logProbInputs } from '../../daemon/model/inference-programs.js';
import {
  referenceBatchLogProbs, referenceGenerate, referenceGreedy, referenceHidden, referenceLogits,
} from '../../daemon/model/reference-forward.js';
import { createRng } from '../../daemon/base/random.js';
import { ensureTinyModel } from '../../daemon/model/tiny.js';
import { gradcheck, onDevice } from '../engine/gradcheck.js';
import { testRuntime } from '../harness/ep.js';
import { loraLogProbGradCase, maxAbsDiff } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-programs-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const model = loadModel(ensureTinyModel(dir), await testRuntime({ threads: 1 }));
const { spec } = model;
const tok = model.tokenizer!;
const V = spec.vocabSize;

/** A fresh PEFT-initialised adapter with B made non-zero, so it changes the outputs. */
function adapter(cfg: Partial<LoraConfig>, seed: number): LoraAdapter {
  const full: LoraConfig = { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null, ...cfg };
  const a = initLora(spec, full, seed);
  const rng = createRng(seed + 1);
  for (const p of a.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.2, 0.2);
  return a;
}

const lora = adapter({}, 7);
const seqs = [
  tok.promptResponse('How many days are there in a week?', 'Seven.'),
  tok.promptResponse([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Capital of France?' }], 'Paris is the capital of France.'),
  tok.promptResponse('Hi', 'Hello! How can I help you today with the report?'),
];
const batch = packLogProbBatch(seqs, model.padId);
const T = batch.length;

t.test('batched log-probs, hidden states and logits agree with the reference forward', async (t) => {
  for (const ad of [null, lora]) {
    const label = ad === null ? 'base' : 'LoRA';
    const ref = referenceBatchLogProbs(model.checkpoint, batch, ad);
    const got = await model.logprobs(batch, ad);
    t.ok(maxAbsDiff(got.seqLogps, ref.sums) < 1e-4, `${label}: summed log-probs (max diff ${maxAbsDiff(got.seqLogps, ref.sums).toExponential(2)})`);
    t.ok(maxAbsDiff(got.tokenLogps, ref.perToken) < 1e-4, `${label}: per-token log-probs`);
    const hidden = await model.hiddenStates(batch, ad);
    const logits = await model.logits(batch, ad);
    seqs.forEach((s, b) => {
      const n = s.ids.length;
      const H = spec.hiddenSize;
      const refH = referenceHidden(model.checkpoint, s.ids, ad);
      t.ok(maxAbsDiff(hidden.subarray(b * H, (b + 1) * H), refH.subarray((n - 1) * H, n * H)) < 1e-4, `${label} row ${b}: hidden at the last token`);
      const refL = referenceLogits(model.checkpoint, s.ids, ad);
      t.ok(maxAbsDiff(logits.subarray(b * T * V, b * T * V + n * V), refL) < 1e-4, `${label} row ${b}: logits`);
    });
  }
  const base = await model.logprobs(batch);
  const adapted = await model.logprobs(batch, lora);
  t.ok(maxAbsDiff(base.seqLogps, adapted.seqLogps) > 0.01, 'the adapter changes the log-probs');
});

function logSoftmaxRow(logits: Float32Array, row: number): Float64Array {
  const out = new Float64Array(V);
  let max = -Infinity;
  for (let v = 0; v < V; v++) max = Math.max(max, logits[row * V + v]!);
  let z = 0;
  for (let v = 0; v < V; v++) z += Math.exp(logits[row * V + v]! - max);
  for (let v = 0; v < V; v++) out[v] = logits[row * V + v]! - max - Math.log(z);
  return out;
}

t.test('vocabulary log-probs at chosen positions and exact per-token KL', async (t) => {
  const positions = [0, 3, 5, 1, 2, 4, 0, 1, 2]; // [B=3, K=3]
  const K = 3;
  const lp = await model.vocabLogProbs(batch, positions, lora);
  const lq = await model.vocabLogProbs(batch, positions, null);
  const kl = await model.tokenKl(batch, positions, lora, null);
  for (let b = 0; b < 3; b++) {
    const n = seqs[b]!.ids.length;
    const refP = referenceLogits(model.checkpoint, seqs[b]!.ids.slice(0, n), lora);
    const refQ = referenceLogits(model.checkpoint, seqs[b]!.ids.slice(0, n), null);
    for (let k = 0; k < K; k++) {
      const pos = positions[b * K + k]!;
      const p = logSoftmaxRow(refP, pos);
      const q = logSoftmaxRow(refQ, pos);
      t.ok(maxAbsDiff(lp.subarray((b * K + k) * V, (b * K + k + 1) * V), p) < 1e-4, `row ${b} position ${pos}: log-probs over the vocabulary`);
      t.ok(maxAbsDiff(lq.subarray((b * K + k) * V, (b * K + k + 1) * V), q) < 1e-4, `row ${b} position ${pos}: base log-probs`);
      let want = 0;
      for (let v = 0; v < V; v++) want += Math.exp(p[v]!) * (p[v]! - q[v]!);
      t.ok(Math.abs(kl[b * K + k]! - want) < 1e-5 && want > 1e-4, `row ${b} position ${pos}: KL ${kl[b * K + k]} = ${want}`);
    }
  }
  const self = await model.tokenKl(batch, positions, lora, lora);
  t.ok(self.every((x) => Math.abs(x) < 1e-9), 'KL of an adapter with itself is 0');
  await t.rejects(model.vocabLogProbs(batch, [0, 1], null), /not a multiple of the batch size/);
  await t.rejects(model.vocabLogProbs(batch, [0, 1, T], null), /outside the batch length/);
});

t.test('KV-cache generation equals no-cache generation, greedy and seeded sampling', async (t) => {
  const prompts = [
    tok.encodePrompt('Write a haiku about the sea.'),
    tok.encodePrompt('Hi'),
    tok.encodePrompt([{ role: 'user', content: 'List three colours.' }, { role: 'assistant', content: 'Red, green, blue.' }, { role: 'user', content: 'More?' }]),
  ];
  t.not(prompts[0]!.length, prompts[1]!.length, 'prompts of different lengths (left padding exercised)');
  for (const ad of [null, lora]) {
    const label = ad === null ? 'base' : 'LoRA';
    const greedy = await model.generate(prompts, { maxNewTokens: 8 }, ad);
    prompts.forEach((p, b) => t.same(greedy[b], referenceGreedy(model.checkpoint, p, 8, [], ad), `${label} row ${b}: cached greedy = recomputed greedy`));
    const sampling = { temperature: 1, topP: 0.9 };
    const sampled = await model.generate(prompts, { maxNewTokens: 8, sampling, seed: 40 }, ad);
    prompts.forEach((p, b) => t.same(sampled[b], referenceGenerate(model.checkpoint, p, { maxNewTokens: 8, sampling, seed: 40 + b }, ad),
      `${label} row ${b}: sampled tokens = reference sampling with seed ${40 + b}`));
    t.same(await model.generate(prompts, { maxNewTokens: 8, sampling, seed: 40 }, ad), sampled, `${label}: same seed, same tokens`);
    t.notSame(await model.generate(prompts, { maxNewTokens: 8, sampling, seed: 41 }, ad), sampled, `${label}: another seed, other tokens`);
  }
  const g = await model.generate(prompts, { maxNewTokens: 6 });
  const stop = g[0]![2]!;
  const stopped = await model.generate(prompts, { maxNewTokens: 6, stopIds: [stop] });
  t.same(stopped[0], g[0]!.slice(0, g[0]!.indexOf(stop) + 1), 'a row ends after its stop token');
  prompts.forEach((p, b) => t.same(stopped[b], referenceGreedy(model.checkpoint, p, 6, [stop]), `row ${b}: stops as the reference does`));
  t.same(await model.generate(prompts, { maxNewTokens: 0 }), [[], [], []], 'no new tokens asked, none made');
  await t.rejects(model.generate(prompts, { maxNewTokens: spec.maxPositions }), /exceeds the model's 256 positions/);
});

t.test('gradient of summed response log-probs w.r.t. LoRA A and B matches float64 finite differences', async (t) => {
  const cfg: LoraConfig = { r: 2, loraAlpha: 4, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
  const init = adapter(cfg, 3);
  const small = packLogProbBatch([
    { ids: seqs[0]!.ids.slice(0, 9), promptLength: 4 },
    { ids: seqs[2]!.ids.slice(0, 7), promptLength: 3 },
  ], model.padId);
  const r = await gradcheck(loraLogProbGradCase('tiny llama LoRA', model, init, small));
  t.ok(r.fdNorm > 1e-2, `gradient is not trivially zero (‖fd‖ = ${r.fdNorm.toExponential(2)})`);
  // float32 gradients (WebGPU) against the float64 differences: 1.1e-6 measured, so 1e-5.
  t.ok(r.relError < (r.dtype === 'float64' ? 1e-6 : 1e-5), `relative error ${r.relError.toExponential(2)} over ${r.elements} LoRA elements (${r.dtype})`);
  onDevice(t, r);
});

t.test('a train step built from buildLogProbs raises the chosen responses\' log-probs', async (t) => {
  const cfg: LoraConfig = { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], loraDropout: 0.1, useRslora: false, baseModelNameOrPath: null };
  const init = initLora(spec, cfg, 5);
  const { g, base } = model.trainGraph('nll_step');
  const lv = declareLora(g, spec, cfg, 'param', 'float32', { training: true });
  const lp = buildLogProbs(base, lv, logProbInputs(g));
  const info = trainProgram({
    loss: O.neg(O.meanAll(lp.seqLogps)), params: [...lv.pairs.values()].flatMap((p) => [p.a, p.b]),
    metrics: { seq_logps: lp.seqLogps }, optimizer: { maxGradNorm: 1, weightDecay: 0 },
  });
  t.ok(g.nodes.some((n) => n.op === 'RandomUniformLike'), 'training program applies LoRA dropout');
  const session = await createSession(toOnnx(g), await testRuntime({ threads: 1 }));
  const state = initState(loraHostTensors(init));
  const feeds = batchFeeds(batch);
  const before = (await model.logprobs(batch)).seqLogps;
  const losses: number[] = [];
  for (let i = 0; i < 8; i++) losses.push((await trainStep(session, info, state, feeds, 1e-2)).loss);
  t.ok(losses[7]! < losses[0]!, `loss falls: ${losses[0]!.toFixed(3)} → ${losses[7]!.toFixed(3)}`);
  // The trained tensors, as an adapter fed to the inference program (no dropout there).
  const trained = adapterFromTensors(init, state.params);
  t.throws(() => adapterFromTensors(lora, state.params), /no float32 LoRA tensors of the right size/);
  const after = (await model.logprobs(batch, trained)).seqLogps;
  const sum = (x: ArrayLike<number>): number => Array.from(x).reduce((a, b) => a + b, 0);
  t.ok(sum(after) > sum(before), `summed log-probs rise: ${sum(before).toFixed(3)} → ${sum(after).toFixed(3)}`);
});

t.test('programs read the weights in place from the checkpoint\'s safetensors file (external data)', async (t) => {
  const g = buildProgram('logprobs', model.weights, null);
  const e = toOnnx(g);
  t.equal(e.externalDir, resolve(dir), 'external data resolved in the checkpoint folder');
  t.ok(e.bytes.length < 64 * 1024, `the program holds no weights (${e.bytes.length} bytes)`);
  const ext = [...g.initializers.values()].filter(isExternal);
  t.ok(ext.length > 0 && ext.every((x) => x.external.location === 'model.safetensors'), 'every weight points into model.safetensors');
});

t.test('LoRA dropout: only in training graphs, a new mask every run', async (t) => {
  const cfg = { ...lora.config, loraDropout: 0.5 };
  const build = async (training: boolean): Promise<() => Promise<number[]>> => {
    // Without training, the inference program's own (fused) kernels: the same numbers exactly.
    const { g, base } = model.trainGraph(`dropout_${training}`, 'float32', training ? 'composite' : 'fused');
    const lv = declareLora(g, spec, cfg, 'input', 'float32', { training });
    output(buildLogProbs(base, lv, logProbInputs(g)).seqLogps, 'seq_logps');
    const session = await createSession(toOnnx(g), await testRuntime({ threads: 1 }));
    const feeds = { ...batchFeeds(batch), ...loraFeeds(lora) };
    return async () => Array.from((await session.run(feeds))['seq_logps']!.data as Float32Array);
  };
  const eval_ = await build(false);
  const train = await build(true);
  const want = Array.from((await model.logprobs(batch, lora)).seqLogps);
  t.ok(maxAbsDiff(await eval_(), want) < 1e-6, 'without training: the inference program\'s log-probs');
  const a = await train();
  const b = await train();
  t.ok(a.every(Number.isFinite) && b.every(Number.isFinite), 'finite with dropout');
  t.notSame(a, want, 'dropout changes the log-probs');
  t.notSame(a, b, 'each run draws a new mask');
});

t.test('text generation renders the chat template and stops at end of turn', async (t) => {
  const [r] = await model.generateText(['Write a haiku about the sea.'], { maxNewTokens: 12 });
  const ids = await model.generate([tok.encodePrompt('Write a haiku about the sea.')], { maxNewTokens: 12, stopIds: [tok.eosTokenId!] });
  t.same(r!.ids, ids[0], 'same tokens as generating from the encoded prompt with eos as stop');
  t.equal(r!.text, tok.decode(ids[0]!, { skipSpecialTokens: true }), 'decoded without special tokens');
});

t.test('float16 weight storage: same programs, half-precision weights', async (t) => {
  const half = loadModel(dir, await testRuntime({ threads: 1, storage: 'float16' as const, programDir: join(dir, 'half') }));
  const a = (await half.logprobs(batch, lora)).seqLogps;
  const b = (await model.logprobs(batch, lora)).seqLogps;
  const d = maxAbsDiff(a, b);
  t.ok(d > 0 && d < 0.05, `log-probs within rounding of float16 weights (max diff ${d.toExponential(2)})`);
});

t.test('policy (fed LoRA) and reference (fixed LoRA) in one graph share the frozen base', async (t) => {
  const refAdapter = adapter({ r: 2, loraAlpha: 2, targetModules: ['k_proj', 'gate_proj'], useRslora: true }, 21);
  const { g, base } = model.trainGraph('policy_and_reference');
  const policy = declareLora(g, spec, lora.config, 'input');
  const reference = declareLora(g, spec, refAdapter.config, 'fixed', 'float32', { adapter: refAdapter, prefix: 'ref.' });
  const inp = logProbInputs(g);
  output(buildLogProbs(base, policy, inp).seqLogps, 'policy');
  output(buildLogProbs(base, reference, inp).seqLogps, 'reference');
  t.equal(g.initializers.has('ref.model.layers.0.self_attn.k_proj.lora_A'), true, 'reference LoRA stored as initializers');
  const session = await createSession(toOnnx(g), await testRuntime({ threads: 1 }));
  const out = await session.run({ ...batchFeeds(batch), ...loraFeeds(lora) });
  t.ok(maxAbsDiff(out['policy']!.data as Float32Array, (await model.logprobs(batch, lora)).seqLogps) < 1e-5, 'policy log-probs');
  t.ok(maxAbsDiff(out['reference']!.data as Float32Array, (await model.logprobs(batch, refAdapter)).seqLogps) < 1e-5, 'reference log-probs (rsLoRA)');
});
