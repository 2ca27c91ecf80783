/**
 * Fused attention and RMSNorm (issue 18 item 2): float32 forward-only programs run attention on
 * onnxruntime's GroupQueryAttention (CPU, WebGPU) or MultiHeadAttention (CUDA) and RMSNorm on
 * SimplifiedLayerNormalization; train steps and float64 programs keep the composites.
 *
 * For every parity architecture (grouped-query heads, RoPE variants, Mistral's sliding window,
 * Qwen2's biases, GPT-2), with and without an adapter, each fused kind gives what the composite
 * program gives on the same feeds: log-probs on right-padded and packed batches, last hidden
 * states, vocabulary log-probs, logits, and every step of cached generation (logits, and the grown
 * cache at real positions). The fixtures' head size 4 is below GroupQueryAttention's multiple of 8,
 * so each architecture also runs widened (head size 16, random weights). A gradient through a fused
 * kernel is refused by name.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { createSession, grad, input, type OrtTensor, ops as O, run, toOnnx } from '../../daemon/engine/index.js';
import { createRng } from '../../daemon/base/random.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { type ForwardKernels, declareLora, fusedKernelsFor } from '../../daemon/model/forward-graph.js';
import { IO, type ProgramKind, buildProgram, sequenceHidden } from '../../daemon/model/inference-programs.js';
import { generateTokens } from '../../daemon/model/kv-generation.js';
import { initLora, type LoraAdapter } from '../../daemon/model/lora.js';
import { batchFeeds, loadModel, loraFeeds, packedFeeds, type Model } from '../../daemon/model/model.js';
import { packSequences } from '../../daemon/model/packing.js';
import { readPeftAdapter } from '../../daemon/model/peft.js';
import { writeRandomCheckpoint } from '../../daemon/model/random-checkpoint.js';
import { ARCHS, PARITY, maxAbsDiff, readJson, type SequenceRecord } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-fused-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const FUSED_OPS = ['GroupQueryAttention', 'MultiHeadAttention', 'SimplifiedLayerNormalization'];
const ATTENTION_OP: Record<Exclude<ForwardKernels, 'composite'>, string> = { 'group-query': 'GroupQueryAttention', 'multi-head': 'MultiHeadAttention' };

/** float32 kernels sum in a different order: differences at rounding level, relative to the values' size. */
const tolerance = (a: Float32Array): number => 1e-5 * Math.max(1, ...Array.from(a, Math.abs));

/** The fixture's config with four heads of 16 (hidden 64) and the tiny tokenizer's vocabulary: random weights. */
function widened(arch: string): Model {
  const config = readJson<Record<string, unknown>>(arch, 'model', 'config.json');
  const wide = config['model_type'] === 'gpt2'
    ? { ...config, n_embd: 64, n_head: 4, vocab_size: 384 }
    : { ...config, hidden_size: 64, head_dim: 16, intermediate_size: 64, num_attention_heads: 4, vocab_size: 384 };
  const out = join(dir, `${arch}-wide`);
  writeRandomCheckpoint(out, wide, { dtype: 'F32', seed: 18 });
  return loadModel(out, { threads: 1 });
}

function randomAdapter(model: Model): LoraAdapter {
  const targets = model.spec.family === 'llama' ? ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'down_proj'] : ['c_attn', 'c_proj'];
  const a = initLora(model.spec, { r: 4, loraAlpha: 8, targetModules: targets, loraDropout: 0, useRslora: false, baseModelNameOrPath: null }, 3);
  const rng = createRng(4);
  for (const p of a.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.05, 0.05);
  return a;
}

/** Every program kind of `model` on each fused kind against the composite, with and without `adapter`. */
async function holdToComposite(t: Test, model: Model, adapter: LoraAdapter, sequences: SequenceRecord[], fused: Exclude<ForwardKernels, 'composite'>[]): Promise<void> {
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
  const opsOf = (kernels: ForwardKernels): string[] => buildProgram('logprobs', model.weights, null, { kernels }).nodes.map((n) => n.op);
  const compositeOps = opsOf('composite');
  t.equal(compositeOps.some((op) => FUSED_OPS.includes(op)), false, 'the composite program has no fused kernel');
  for (const kernels of fused) {
    const fusedOps = opsOf(kernels);
    t.equal(fusedOps.filter((o) => o === ATTENTION_OP[kernels]).length, model.spec.numLayers, `${kernels}: one ${ATTENTION_OP[kernels]} per layer`);
    if (model.spec.family === 'llama') {
      t.equal(fusedOps.filter((o) => o === 'SimplifiedLayerNormalization').length, 2 * model.spec.numLayers + 1, `${kernels}: every RMSNorm fused`);
      t.equal(fusedOps.includes('ReduceMean'), false, `${kernels}: no composite RMSNorm left`);
    }
    t.ok(fusedOps.length < compositeOps.length, `${kernels}: fewer nodes: ${fusedOps.length} vs ${compositeOps.length} composite`);
  }

  for (const [label, ad] of [['base', null], ['LoRA', adapter]] as const) {
    const lora = ad === null ? null : ad.config;
    const extra = ad === null ? {} : loraFeeds(ad);
    for (const kind of Object.keys(feedsOf) as (keyof typeof feedsOf)[]) {
      const outs: Record<string, ort.Tensor>[] = [];
      for (const kernels of ['composite', ...fused] as const) {
        const s = await createSession(toOnnx(buildProgram(kind, model.weights, lora, { kernels })), model.runtime);
        outs.push(await run(s, { ...feedsOf[kind], ...extra }));
      }
      fused.forEach((kernels, i) => {
        for (const name of Object.keys(outs[0]!)) {
          const [a, b] = [outs[0]![name]!.data as Float32Array, outs[i + 1]![name]!.data as Float32Array];
          t.same(outs[i + 1]![name]!.dims, outs[0]![name]!.dims, `${label} ${kind}.${name}: same shape`);
          const d = maxAbsDiff(a, b);
          t.ok(d <= tolerance(a) && a.every(Number.isFinite), `${label} ${kind}.${name}: ${kernels} = composite (max |Δ| ${d.toExponential(2)})`);
        }
      });
    }

    // Cached generation over left-padded prompts: the same greedy tokens, and at every step the same
    // logits and the same cache at real positions (a left pad's keys/values are never attended; what
    // a pad query computes differs by kernel).
    const prompts = sequences.map((s) => s.ids.slice(0, s.prompt_length));
    const L = Math.max(...prompts.map((p) => p.length));
    const steps: Record<string, ort.Tensor>[][] = [];
    const tokens: number[][][] = [];
    for (const kernels of ['composite', ...fused] as const) {
      const s = await createSession(toOnnx(buildProgram('decode', model.weights, lora, { kernels })), model.runtime);
      const seen: Record<string, ort.Tensor>[] = [];
      tokens.push(await generateTokens(async (feeds) => {
        const r = await run(s, feeds);
        seen.push(r);
        return r;
      }, model.spec, prompts, { maxNewTokens: 5 }, model.padId, extra));
      steps.push(seen);
    }
    /** Entries of a step's output at real positions only (presents [B, nKv, S, d]: keys at or after the row's left pads). */
    const real = (name: string, x: ort.Tensor): number[] => {
      if (name === IO.logits) return Array.from(x.data as Float32Array);
      const [B, H, S, d] = x.dims as [number, number, number, number];
      const out: number[] = [];
      for (let b = 0; b < B; b++) {
        for (let h = 0; h < H; h++) for (let j = L - prompts[b]!.length; j < S; j++) for (let e = 0; e < d; e++) out.push((x.data as Float32Array)[((b * H + h) * S + j) * d + e]!);
      }
      return out;
    };
    fused.forEach((kernels, k) => {
      t.same(tokens[k + 1], tokens[0], `${label} ${kernels}: the same greedy continuations`);
      t.equal(steps[k + 1]!.length, steps[0]!.length, `${label} ${kernels}: the same number of decode steps (${steps[0]!.length})`);
      let worst = 0;
      steps[0]!.forEach((r, i) => {
        for (const name of Object.keys(r)) {
          t.same(steps[k + 1]![i]![name]!.dims, r[name]!.dims, `${label} ${kernels} step ${i} ${name}: same shape`);
          const [a, b] = [real(name, r[name]!), real(name, steps[k + 1]![i]![name]!)];
          worst = Math.max(worst, maxAbsDiff(a, b) / Math.max(1, ...a.map(Math.abs)));
        }
      });
      t.ok(worst <= 1e-5, `${label} ${kernels}: every decode step's logits and cache agree (max relative |Δ| ${worst.toExponential(2)})`);
    });
  }
}

for (const arch of ARCHS) {
  t.test(arch, async (t) => {
    const { sequences } = readJson<{ sequences: SequenceRecord[] }>(arch, 'reference.json');
    const narrow = loadModel(join(PARITY, arch, 'model'), { threads: 1 });
    t.teardown(() => narrow.close());
    t.equal(fusedKernelsFor('cpu', narrow.spec), narrow.spec.headDim % 8 === 0 ? 'group-query' : 'composite',
      `head size ${narrow.spec.headDim}: the CPU's choice`);
    await t.test(`the fixture (head size ${narrow.spec.headDim})`, (t) =>
      holdToComposite(t, narrow, readPeftAdapter(join(PARITY, arch, 'adapter'), narrow.spec), sequences, narrow.spec.headDim % 8 === 0 ? ['group-query', 'multi-head'] : ['multi-head']));
    const wide = widened(arch);
    t.teardown(() => wide.close());
    t.equal(fusedKernelsFor('cpu', wide.spec), 'group-query', 'head size 16: GroupQueryAttention on the CPU');
    t.equal(fusedKernelsFor('cuda', wide.spec), 'multi-head', 'MultiHeadAttention on CUDA');
    await t.test('widened (head size 16, random weights)', (t) => holdToComposite(t, wide, randomAdapter(wide), sequences, ['group-query', 'multi-head']));
  });
}

t.test('a gradient through a fused kernel is refused, naming the op', async (t) => {
  const model = widened('llama');
  t.teardown(() => model.close());
  const { g, base } = model.trainGraph('fused_grad', 'float32', 'fused');
  const lv = declareLora(g, model.spec, randomAdapter(model).config, 'param');
  const ids = input(g, 'ids', 'int64', [1, 4]);
  const mask = input(g, 'mask', 'float32', [1, 4]);
  const loss = O.meanAll(sequenceHidden(base, lv, ids, mask));
  const first = [...lv.pairs.values()][0]!;
  t.throws(() => grad(loss, [first.a, first.b]), /no gradient rule for op (GroupQueryAttention|SimplifiedLayerNormalization)/);
  t.throws(() => model.trainGraph('fused_f64', 'float64', 'fused'), /fused kernels are float32 only/);
});
