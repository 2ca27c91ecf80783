/**
 * Fused attention and RMSNorm (issue 18 item 2): float32 forward-only programs run attention on
 * onnxruntime's MultiHeadAttention and RMSNorm on SimplifiedLayerNormalization; train steps and
 * float64 programs keep the composites. For every parity architecture (grouped-query heads, RoPE
 * variants, Mistral's sliding window, Qwen2's biases, GPT-2) and with and without an adapter, each
 * program kind gives what the composite program gives on the same feeds: log-probs on right-padded
 * and packed batches, last hidden states, vocabulary log-probs, logits, and every step of cached
 * generation (logits and the grown cache). A gradient through a fused kernel is refused by name.
 */
import t from 'tap';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { createSession, grad, input, type OrtTensor, ops as O, run, toOnnx } from '../../daemon/engine/index.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { type ForwardKernels, declareLora } from '../../daemon/model/forward-graph.js';
import { IO, type ProgramKind, buildProgram, sequenceHidden } from '../../daemon/model/inference-programs.js';
import { generateTokens } from '../../daemon/model/kv-generation.js';
import { batchFeeds, loadModel, loraFeeds, packedFeeds } from '../../daemon/model/model.js';
import { packSequences } from '../../daemon/model/packing.js';
import { readPeftAdapter } from '../../daemon/model/peft.js';
import { ARCHS, PARITY, maxAbsDiff, readJson, type SequenceRecord } from './fixtures.js';

/** float32 kernels sum in a different order: differences at rounding level, relative to the values' size. */
const tolerance = (a: Float32Array): number => 1e-5 * Math.max(1, ...Array.from(a, Math.abs));

const opsOf = (kind: ProgramKind, kernels: ForwardKernels, m: ReturnType<typeof loadModel>, lora: Parameters<typeof buildProgram>[2]): string[] =>
  buildProgram(kind, m.weights, lora, { kernels }).nodes.map((n) => n.op);

for (const arch of ARCHS) {
  t.test(arch, async (t) => {
    const model = loadModel(join(PARITY, arch, 'model'), { threads: 1 });
    t.teardown(() => model.close());
    const adapter = readPeftAdapter(join(PARITY, arch, 'adapter'), model.spec);
    const { sequences } = readJson<{ sequences: SequenceRecord[] }>(arch, 'reference.json');
    const seqs = sequences.map((s) => ({ ids: s.ids, promptLength: s.prompt_length }));
    const plain = packLogProbBatch(seqs, model.padId);
    const packed = packSequences(seqs, model.padId, { pack: true, sharePrompts: true });
    const positions = Array.from({ length: plain.batch }, (_, b) => [0, Math.min(2, plain.length - 1), sequences[b]!.ids.length - 2]).flat();
    const tokenFeeds = { [IO.inputIds]: batchFeeds(plain)[IO.inputIds], [IO.attentionMask]: batchFeeds(plain)[IO.attentionMask] };
    const feedsOf: Record<Exclude<ProgramKind, 'decode'>, Record<string, OrtTensor>> = {
      logprobs: batchFeeds(plain),
      response_logprobs: packedFeeds(packed),
      hidden: tokenFeeds,
      vocab_logprobs: { ...tokenFeeds, [IO.positions]: new ort.Tensor('int64', BigInt64Array.from(positions.map(BigInt)), [plain.batch, 3]) },
      logits: tokenFeeds,
    };

    const fusedOps = opsOf('logprobs', 'fused', model, null);
    const compositeOps = opsOf('logprobs', 'composite', model, null);
    t.equal(fusedOps.filter((op) => op === 'MultiHeadAttention').length, model.spec.numLayers, 'one MultiHeadAttention per layer in the fused program');
    t.equal(compositeOps.includes('MultiHeadAttention') || compositeOps.includes('SimplifiedLayerNormalization'), false, 'the composite program has no fused kernel');
    if (model.spec.family === 'llama') {
      t.equal(fusedOps.filter((op) => op === 'SimplifiedLayerNormalization').length, 2 * model.spec.numLayers + 1, 'every RMSNorm fused');
      t.equal(fusedOps.includes('ReduceMean'), false, 'no composite RMSNorm left');
    }
    t.equal(fusedOps.length < compositeOps.length, true, `fewer nodes: ${fusedOps.length} fused vs ${compositeOps.length} composite`);

    for (const [label, ad] of [['base', null], ['LoRA', adapter]] as const) {
      const lora = ad === null ? null : ad.config;
      const extra = ad === null ? {} : loraFeeds(ad);
      for (const kind of Object.keys(feedsOf) as (keyof typeof feedsOf)[]) {
        const outs: Record<string, ort.Tensor>[] = [];
        for (const kernels of ['composite', 'fused'] as const) {
          const s = await createSession(toOnnx(buildProgram(kind, model.weights, lora, { kernels })), model.runtime);
          outs.push(await run(s, { ...feedsOf[kind], ...extra }));
        }
        for (const name of Object.keys(outs[0]!)) {
          const [a, b] = [outs[0]![name]!.data as Float32Array, outs[1]![name]!.data as Float32Array];
          t.same(outs[1]![name]!.dims, outs[0]![name]!.dims, `${label} ${kind}.${name}: same shape`);
          const d = maxAbsDiff(a, b);
          t.ok(d <= tolerance(a) && a.every(Number.isFinite), `${label} ${kind}.${name}: fused = composite (max |Δ| ${d.toExponential(2)})`);
        }
      }

      // Cached generation: the same greedy tokens, and at every step the same logits and cache.
      const prompts = sequences.map((s) => s.ids.slice(0, s.prompt_length));
      const steps: Record<string, ort.Tensor>[][] = [];
      const tokens: number[][][] = [];
      for (const kernels of ['composite', 'fused'] as const) {
        const s = await createSession(toOnnx(buildProgram('decode', model.weights, lora, { kernels })), model.runtime);
        const seen: Record<string, ort.Tensor>[] = [];
        tokens.push(await generateTokens(async (feeds) => {
          const r = await run(s, feeds);
          seen.push(r);
          return r;
        }, model.spec, prompts, { maxNewTokens: 5 }, model.padId, extra));
        steps.push(seen);
      }
      t.same(tokens[1], tokens[0], `${label}: the same greedy continuations`);
      t.equal(steps[1]!.length, steps[0]!.length, `${label}: the same number of decode steps (${steps[0]!.length})`);
      let worst = 0;
      steps[0]!.forEach((r, i) => {
        for (const name of Object.keys(r)) {
          const a = r[name]!.data as Float32Array;
          worst = Math.max(worst, maxAbsDiff(a, steps[1]![i]![name]!.data as Float32Array) / (tolerance(a) / 1e-5));
        }
      });
      t.ok(worst <= 1e-5, `${label}: every decode step's logits and present keys/values agree (max relative |Δ| ${worst.toExponential(2)})`);
    }
  });
}

t.test('a gradient through a fused kernel is refused, naming the op', async (t) => {
  const model = loadModel(join(PARITY, 'llama', 'model'), { threads: 1 });
  t.teardown(() => model.close());
  const adapter = readPeftAdapter(join(PARITY, 'llama', 'adapter'), model.spec);
  const { g, base } = model.trainGraph('fused_grad', 'float32', 'fused');
  const lv = declareLora(g, model.spec, adapter.config, 'param');
  const ids = input(g, 'ids', 'int64', [1, 4]);
  const mask = input(g, 'mask', 'float32', [1, 4]);
  const loss = O.meanAll(sequenceHidden(base, lv, ids, mask));
  const first = [...lv.pairs.values()][0]!;
  t.throws(() => grad(loss, [first.a, first.b]), /no gradient rule for op (MultiHeadAttention|SimplifiedLayerNormalization)/);
  t.throws(() => model.trainGraph('fused_f64', 'float64', 'fused'), /fused kernels are float32 only/);
});
