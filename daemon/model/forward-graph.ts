/**
 * The transformer forward pass as an engine graph, for the Llama family (Llama, Mistral, Qwen2)
 * and GPT-2, with LoRA on the configured modules. Graph functions, not programs: the programs in
 * inference-programs.ts and the alignment engineer's train steps both call them.
 *
 * Semantics follow transformers' modeling_llama / _mistral / _qwen2 / _gpt2 (as reference-forward.ts,
 * which the tests hold this against):
 * - RoPE (Su et al., 2021) in the rotate_half layout, angles = position · inv_freq computed in
 *   float32 as transformers does; llama3/linear scaling from `ropeInvFreq`.
 * - Grouped-query attention without repeating k/v: q is viewed as [B, n_kv, group, T, d] and k/v as
 *   [B, n_kv, 1, S, d], so one broadcasting product serves every head of a group.
 * - The attention bias [B|1, 1, T, S] is additive (0 or −1e9): causal, padding and Mistral's
 *   sliding window (query index − key index < W, over absolute cache indices) in one tensor.
 *
 * Weights: frozen base weights are initializers that stay in the checkpoint's files (ONNX external
 * data, memory-mapped: weight-files.ts), in the checkpoint's own layout and element type:
 * `linear` weights [out, in] enter a transposed product (FusedMatMul transB; measured no slower
 * than pre-transposed copies on the CPU provider, and no second copy of the model in memory),
 * GPT-2's Conv1D weights [in, out] a plain MatMul; a tied head reuses the embedding. Half-precision
 * matrices are widened to the compute type one at a time, next to their product (castLate), and
 * embeddings gather their rows before widening them.
 *
 * Activation checkpointing (`recompute`): each decoder layer is a recompute() segment, so a train
 * step keeps one hidden state per layer and recomputes the layer's inside during its backward.
 *
 * LoRA (PEFT layout, A [r, in], B [out, r]): y += scaling · (dropout(x)·Aᵀ)·Bᵀ, the scaling on the
 * rank-r product. A and B are trainable parameters ('param'), plain graph inputs fed on every run
 * ('input', how inference programs swap adapters without rebuilding), or initializers ('fixed').
 */
import { AligndError } from '../base/errors.js';
import { A, type Graph, type Provider, type Value, constant, emit, frozen, frozenExternal, input, ops as O, param, recompute, tensor, withShape } from '../engine/index.js';
import type { ModelSpec } from './hf-config.js';
import { loraScaling, loraTargets, type LoraAdapter, type LoraConfig } from './lora.js';
import { ropeInvFreq } from './reference-forward.js';
import { GRAPH_DTYPE, type GraphWeights, externalRef } from './weight-files.js';
import { linearModules, lmHeadName, weightValues, type LinearModule } from './weights.js';

export type { GraphWeights } from './weight-files.js';

export type FloatType = 'float32' | 'float64';

/**
 * Which kernels the forward emits for attention and RMSNorm: 'composite' — standard ONNX ops
 * (MatMul, Add of the bias, Softmax; Mul/ReduceMean/Sqrt), differentiable, any float type (train
 * steps, float64 checks). The fused kinds are onnxruntime contrib kernels, float32, no gradients
 * (forward-only programs: log-probs, reference, KL, evaluation, generation), RMSNorm as
 * SimplifiedLayerNormalization and attention as 'group-query' (GroupQueryAttention: kv heads as
 * they are, the cache appended in the kernel) or 'multi-head' (MultiHeadAttention on kv heads
 * repeated for their group).
 */
export type ForwardKernels = 'composite' | 'group-query' | 'multi-head';

/**
 * The fused kernels for a provider and model. CPU: GroupQueryAttention (in bench:align's realistic
 * line MultiHeadAttention on repeated kv heads was slower than the composite: bench/README.md);
 * its kernel takes head sizes that are multiples of 8 only, other models keep the composites.
 * CUDA: MultiHeadAttention (GroupQueryAttention's CUDA kernels are float16/bfloat16 only).
 * WebGPU: the composites — on lavapipe its GroupQueryAttention and MultiHeadAttention both put
 * the tiny model's log-probs on right-padded batches 0.09 off the reference forward
 * (test/model/programs-tiny.test.ts under ALIGND_TEST_EP=webgpu), where the composites agree.
 */
export function fusedKernelsFor(provider: Provider, spec: ModelSpec): ForwardKernels {
  if (provider === 'cuda') return 'multi-head';
  if (provider === 'webgpu') return 'composite';
  return spec.headDim % 8 === 0 ? 'group-query' : 'composite';
}

/** Additive bias for masked attention scores (exp(−1e9 − max) is 0 in float32). */
export const MASKED = -1e9;

export interface BaseWeights {
  spec: ModelSpec;
  dtype: FloatType;
  kernels: ForwardKernels;
  /**
   * The frozen weight under its Hugging Face name, in the compute type. A stored half-precision
   * matrix is widened next to its use: pass the product's other operand as `near`.
   */
  get(name: string, near?: Value): Value;
  /** Rows `ids` of an embedding [V, H] (gathered in the stored type, then widened). */
  rows(name: string, ids: Value): Value;
  /**
   * Rows [start, end) of a matrix as their own frozen weight (for the head in vocabulary blocks):
   * a second reference into the same file bytes, not a copy; widened next to `near` like get().
   */
  block(name: string, start: number, end: number, near: Value): Value;
}

/**
 * Declare the base weights in `g`, each on first use (a program that never reads the lm head does
 * not carry it): float32 programs reference the weights' files (external data, in their stored
 * type); float64 programs (gradient checks, small models) hold float64 copies.
 */
export function declareBaseWeights(g: Graph, w: GraphWeights, dtype: FloatType = 'float32', kernels: ForwardKernels = 'composite'): BaseWeights {
  if (kernels !== 'composite' && dtype !== 'float32') {
    throw new AligndError('INTERNAL', `forward graph: fused kernels are float32 only, not ${dtype}`, { action: 'build float64 programs with composite kernels' });
  }
  const made = new Map<string, Value>();
  /** Rows [start, end) of weight `name` (all rows when end is undefined), declared once. */
  const stored = (name: string, start = 0, end?: number): Value => {
    const key = end === undefined ? name : `${name}.rows${start}-${end}`;
    const hit = made.get(key);
    if (hit !== undefined) return hit;
    const t = w.tensors.get(name);
    if (t === undefined) throw new AligndError('INTERNAL', `forward graph: weight ${name} is not in the checkpoint`);
    const rows = t.shape[0]!;
    const last = end ?? rows;
    const rowBytes = t.length / rows;
    const dims = [last - start, ...t.shape.slice(1)];
    const type = GRAPH_DTYPE[t.dtype];
    let v: Value;
    if (dtype === 'float64' || type === undefined) {
      const perRow = t.shape.slice(1).reduce((a, b) => a * b, 1);
      const all = weightValues(t).subarray(start * perRow, last * perRow);
      v = frozen(g, key, tensor(dtype, dims, dtype === 'float64' ? Float64Array.from(all) : all));
    } else {
      const ref = externalRef(w, t);
      v = frozenExternal(g, key, { dtype: type, dims, external: { ...ref, offset: ref.offset + start * rowBytes, length: (last - start) * rowBytes } });
    }
    made.set(key, v);
    return v;
  };
  const widen = (v: Value, near?: Value): Value => {
    if (v.dtype === dtype) return v;
    // Vectors (norms, biases) are small: a plain Cast, which onnxruntime may fold into a constant.
    return near !== undefined && (v.shape?.length ?? 0) >= 2 ? O.castLate(v, dtype, near) : O.cast(v, dtype);
  };
  return {
    spec: w.spec,
    dtype,
    kernels,
    get: (name, near) => widen(stored(name), near),
    rows: (name, ids) => O.cast(O.gather(stored(name), ids, 0), dtype),
    block: (name, start, end, near) => widen(stored(name, start, end), near),
  };
}

export type LoraMode = 'param' | 'input' | 'fixed';

export interface LoraValues {
  config: LoraConfig;
  scaling: number;
  /** Module path → A [r, in], B [out, r]. */
  pairs: Map<string, { module: LinearModule; a: Value; b: Value }>;
  /** Dropout probability applied to LoRA inputs (0 = none; only training programs set it). */
  dropout: number;
}

/** Graph names of a module's LoRA tensors (what inference programs are fed and train states hold). */
export function loraNames(prefix: string, path: string): { a: string; b: string } {
  return { a: `${prefix}${path}.lora_A`, b: `${prefix}${path}.lora_B` };
}

export interface DeclareLoraOptions {
  /** Prefix for the tensor names (two adapters in one graph need different prefixes). */
  prefix?: string;
  /** Values for 'fixed' mode (required there). */
  adapter?: LoraAdapter;
  /** Apply the config's lora_dropout (training programs only). */
  training?: boolean;
}

/** Declare LoRA A/B tensors for every module the config targets. */
export function declareLora(g: Graph, spec: ModelSpec, cfg: LoraConfig, mode: LoraMode, dtype: FloatType = 'float32',
  opts: DeclareLoraOptions = {}): LoraValues {
  const prefix = opts.prefix ?? '';
  const pairs = new Map<string, { module: LinearModule; a: Value; b: Value }>();
  for (const module of loraTargets(spec, cfg)) {
    const n = loraNames(prefix, module.path);
    const shapeA = [cfg.r, module.inFeatures];
    const shapeB = [module.outFeatures, cfg.r];
    let a: Value;
    let b: Value;
    if (mode === 'fixed') {
      const pair = opts.adapter?.pairs.get(module.path);
      if (pair === undefined) {
        throw new AligndError('ADAPTER_INVALID', `adapter has no LoRA tensors for ${module.path}`, { action: 'use an adapter made for this LoRA config' });
      }
      const cvt = (x: Float32Array): Float32Array | Float64Array => (dtype === 'float32' ? x : Float64Array.from(x));
      a = frozen(g, n.a, tensor(dtype, shapeA, cvt(pair.a)));
      b = frozen(g, n.b, tensor(dtype, shapeB, cvt(pair.b)));
    } else {
      const declare = mode === 'param' ? param : input;
      a = declare(g, n.a, dtype, shapeA);
      b = declare(g, n.b, dtype, shapeB);
    }
    pairs.set(module.path, { module, a, b });
  }
  return { config: cfg, scaling: loraScaling(cfg), pairs, dropout: opts.training ? cfg.loraDropout : 0 };
}

/** FNV-1a of a string: a stable per-module seed (the same program gives the same bytes). */
function stableSeed(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h % 1000003;
}

/**
 * Inverted dropout (x · mask / keep) with the mask drawn in the graph by RandomUniformLike; the
 * mask is a constant to autodiff. Each module draws its own mask (as PEFT's per-layer dropout);
 * onnxruntime keeps one generator per node, seeded from the module path, so every run draws a new
 * mask and a fresh session repeats the same sequence of masks.
 */
function dropout(x: Value, p: number, path: string): Value {
  const keep = 1 - p;
  const u = emit(x.g, 'RandomUniformLike', [O.stopGradient(x)], { dtype: A.i(x.dtype === 'float32' ? 1 : 11), seed: A.f(stableSeed(path)) },
    [{ dtype: x.dtype, shape: x.shape }])[0]!;
  return O.mul(O.mul(x, O.cast(O.less(u, keep), x.dtype)), 1 / keep);
}

/** x [..., in] → [..., out] through a (possibly LoRA-adapted) linear or Conv1D module. */
function project(base: BaseWeights, lora: LoraValues | null, m: LinearModule, x: Value): Value {
  let y = O.matmul(x, base.get(`${m.path}.weight`, x), m.layout === 'linear' ? { transB: true } : {});
  if (m.bias) y = O.add(y, base.get(`${m.path}.bias`));
  const pair = lora?.pairs.get(m.path);
  if (pair !== undefined && lora !== null) {
    const xin = lora.dropout > 0 ? dropout(x, lora.dropout, m.path) : x;
    const low = O.matmul(xin, pair.a, { transB: true });
    y = O.add(y, O.matmul(low, pair.b, { transB: true, alpha: lora.scaling }));
  }
  return y;
}

export interface ForwardInputs {
  /** [B, T] int64 token ids. */
  ids: Value;
  /** [B|1, T] int64 position of each token (0-based; right-padded rows: 0..T−1). */
  positions: Value;
  /** [B|1, 1, T, S] additive attention bias over the S = past + T keys (see attentionBias helpers). */
  bias: Value;
  /** Per layer, cached keys and values [B, n_kv, past, d] (generation). */
  past?: { key: Value; value: Value }[];
  /** Activation checkpointing: recompute each decoder layer in the backward pass (train steps). */
  recompute?: boolean;
}

export interface ForwardOutputs {
  /** [B, T, H] final hidden states (after the last norm). */
  hidden: Value;
  /** Per layer, keys and values [B, n_kv, S, d] including this call's tokens. */
  present: { key: Value; value: Value }[];
}

/** cos and sin of the RoPE angles as [B|1, T, 1, d/2], in the graph's float type. */
function ropeTables(spec: ModelSpec, positions: Value, dtype: FloatType): { cos: Value; sin: Value } {
  const g = positions.g;
  const inv = ropeInvFreq(spec.rope!, spec.headDim);
  const freqs = constant(g, tensor('float32', [inv.length], Float32Array.from(inv)));
  // float32 product, as transformers computes freqs = inv_freq · position.
  const ang = O.mul(O.unsqueeze(O.cast(positions, 'float32'), [2]), freqs);
  const fix = (v: Value): Value => O.unsqueeze(dtype === 'float32' ? v : O.cast(v, dtype), [2]);
  return { cos: fix(O.cos(ang)), sin: fix(O.sin(ang)) };
}

/** rotate_half RoPE on x [B, T, heads, d]. */
function rope(x: Value, cos: Value, sin: Value, d: number): Value {
  const half = d / 2;
  const x1 = O.slice(x, [0], [half], [3]);
  const x2 = O.slice(x, [half], [d], [3]);
  return O.concat([O.sub(O.mul(x1, cos), O.mul(x2, sin)), O.add(O.mul(x2, cos), O.mul(x1, sin))], 3);
}

/**
 * softmax(q·kᵀ/√d + bias)·v for q [B, T, nH·d], k/v [B, T, nKv·d]; returns [B, T, nH·d] and the
 * keys/values [B, nKv, S, d] (past included).
 */
function attention(spec: ModelSpec, kernels: ForwardKernels, q: Value, k: Value, v: Value, bias: Value, past: { key: Value; value: Value } | undefined,
  rot: { cos: Value; sin: Value } | null): { out: Value; key: Value; value: Value } {
  const { numHeads: nH, numKvHeads: nKv, headDim: d } = spec;
  const group = nH / nKv;
  let q4 = O.reshape(q, [0, 0, nH, d]);
  let k4 = O.reshape(k, [0, 0, nKv, d]);
  if (rot !== null) {
    q4 = rope(q4, rot.cos, rot.sin, d);
    k4 = rope(k4, rot.cos, rot.sin, d);
  }
  if (kernels === 'group-query') {
    // Every row counts as full length (P + T); padding and packing are the bias's job.
    const T = O.shapeOf(q, 1, 2);
    const total = past === undefined ? T : O.add(O.shapeOf(past.key, 2, 3), T);
    const total32 = O.cast(O.squeeze(total, [0]), 'int32');
    const seqlensK = O.cast(O.expand(O.sub(total, 1), O.shapeOf(q, 0, 1)), 'int32');
    return O.groupQueryAttention(O.reshape(q4, [0, 0, nH * d]), O.reshape(k4, [0, 0, nKv * d]), v, past, seqlensK, total32, bias,
      { heads: nH, kvHeads: nKv, scale: 1 / Math.sqrt(d) });
  }
  let key = O.transpose(k4, [0, 2, 1, 3]);
  let value = O.transpose(O.reshape(v, [0, 0, nKv, d]), [0, 2, 1, 3]);
  if (past !== undefined) {
    key = O.concat([past.key, key], 2);
    value = O.concat([past.value, value], 2);
  }
  if (kernels === 'multi-head') {
    // The kernel wants as many key/value heads as query heads: each kv head repeated for its group
    // ([B, nKv, S, d] → [B, nH, S, d], as transformers' repeat_kv); the cache keeps nKv heads.
    const heads = (x: Value): Value => (group === 1 ? x : O.reshape(O.expand(O.unsqueeze(x, [2]), [1, 1, group, 1, 1]), [0, nH, -1, d]));
    const out = O.multiHeadAttention(O.reshape(q4, [0, 0, nH * d]), heads(key), heads(value), bias, { heads: nH, scale: 1 / Math.sqrt(d) });
    return { out, key, value };
  }
  const q5 = O.transpose(O.reshape(q4, [0, 0, nKv, group, d]), [0, 2, 3, 1, 4]); // [B, nKv, G, T, d]
  const scores = O.matmul(q5, O.unsqueeze(key, [2]), { transB: true, alpha: 1 / Math.sqrt(d) }); // [B, nKv, G, T, S]
  const probs = O.softmax(O.add(scores, O.unsqueeze(bias, [2])), -1);
  const ctx = O.matmul(probs, O.unsqueeze(value, [2])); // [B, nKv, G, T, d]
  const out = O.reshape(O.transpose(ctx, [0, 3, 1, 2, 4]), [0, 0, nH * d]);
  return { out, key, value };
}

/** Final hidden states (and the layers' keys/values) of a token batch. */
export function forward(base: BaseWeights, lora: LoraValues | null, inp: ForwardInputs): ForwardOutputs {
  const { spec } = base;
  const mods = linearModules(spec);
  const perLayer = spec.family === 'llama' ? 7 : 4;
  const present: { key: Value; value: Value }[] = [];
  const eps = spec.normEps;
  const kernels = base.kernels;
  const rmsNorm = (x: Value, scale: Value): Value => (kernels === 'composite' ? O.rmsNorm(x, scale, eps) : O.simplifiedLayerNorm(x, scale, eps));
  // One decoder layer, as a recompute() segment when checkpointing (its input is what the forward keeps).
  const layer = (x: Value, body: (x: Value) => Value): Value => (inp.recompute ? recompute(x.g, [x], () => body(x)) : body(x));
  if (spec.family === 'llama') {
    let x = base.rows('model.embed_tokens.weight', inp.ids);
    const rot = ropeTables(spec, inp.positions, base.dtype);
    for (let l = 0; l < spec.numLayers; l++) {
      const [qm, km, vm, om, gm, um, dm] = mods.slice(l * perLayer, (l + 1) * perLayer) as [LinearModule, LinearModule, LinearModule, LinearModule, LinearModule, LinearModule, LinearModule];
      const p = `model.layers.${l}`;
      x = layer(x, (x) => {
        const h = rmsNorm(x, base.get(`${p}.input_layernorm.weight`));
        const att = attention(spec, kernels, project(base, lora, qm, h), project(base, lora, km, h), project(base, lora, vm, h), inp.bias, inp.past?.[l], rot);
        present.push({ key: att.key, value: att.value });
        const x1 = O.add(x, project(base, lora, om, att.out));
        const h2 = rmsNorm(x1, base.get(`${p}.post_attention_layernorm.weight`));
        const act = O.mul(O.silu(project(base, lora, gm, h2)), project(base, lora, um, h2));
        return O.add(x1, project(base, lora, dm, act));
      });
    }
    return { hidden: rmsNorm(x, base.get('model.norm.weight')), present };
  }
  const H = spec.hiddenSize;
  let x = O.add(base.rows('transformer.wte.weight', inp.ids), base.rows('transformer.wpe.weight', inp.positions));
  for (let l = 0; l < spec.numLayers; l++) {
    const [am, pm, fm, cm] = mods.slice(l * perLayer, (l + 1) * perLayer) as [LinearModule, LinearModule, LinearModule, LinearModule];
    const p = `transformer.h.${l}`;
    x = layer(x, (x) => {
      const h = O.layerNorm(x, base.get(`${p}.ln_1.weight`), base.get(`${p}.ln_1.bias`), { epsilon: eps });
      const [q, k, v] = O.split(project(base, lora, am, h), [H, H, H], 2) as [Value, Value, Value];
      const att = attention(spec, kernels, q, k, v, inp.bias, inp.past?.[l], null);
      present.push({ key: att.key, value: att.value });
      const x1 = O.add(x, project(base, lora, pm, att.out));
      const h2 = O.layerNorm(x1, base.get(`${p}.ln_2.weight`), base.get(`${p}.ln_2.bias`), { epsilon: eps });
      return O.add(x1, project(base, lora, cm, O.gelu(project(base, lora, fm, h2), 'tanh')));
    });
  }
  return { hidden: O.layerNorm(x, base.get('transformer.ln_f.weight'), base.get('transformer.ln_f.bias'), { epsilon: eps }), present };
}

/** Logits [..., vocab] of hidden states [..., H]; the head (tied or not) is [vocab, H]. */
export function lmHead(base: BaseWeights, hidden: Value): Value {
  return O.matmul(hidden, base.get(lmHeadName(base.spec), hidden), { transB: true });
}

/**
 * In-graph attention bias for right-padded sequences without a cache: causal (and Mistral's
 * sliding window) from the sequence length, plus −1e9 on padded keys. Returns [B, 1, T, T].
 */
export function sequenceBias(spec: ModelSpec, attentionMask: Value, dtype: FloatType): Value {
  const g = attentionMask.g;
  const len = O.squeeze(O.shapeOf(attentionMask, 1, 2), [0]);
  // 0..T−1 has the sequence dim of the mask: naming it so keeps every shape downstream decidable.
  const pos = withShape(O.range(constant(g, tensor('int64', [], [0])), len, constant(g, tensor('int64', [], [1]))), [attentionMask.shape![1]!]);
  const diff = O.sub(O.unsqueeze(pos, [1]), O.unsqueeze(pos, [0])); // query − key
  let allowed = O.greaterOrEqual(diff, 0);
  if (spec.slidingWindow !== null) allowed = O.and(allowed, O.less(diff, spec.slidingWindow));
  const causal = O.where(allowed, O.scalar(g, dtype, 0), MASKED);
  const pad = O.unsqueeze(O.mul(O.sub(attentionMask, 1), -MASKED), [1, 2]); // 0 for real keys, −1e9 for pads
  return O.add(O.unsqueeze(causal, [0, 1]), pad);
}

/**
 * In-graph attention bias for packed rows (packing.ts), [R, 1, T, T]: a query sees the keys of its
 * own segment at or before it (causal by index within the row) that are in the segment's prompt
 * (branch 0) or in its own branch, and nothing else — not other segments, not another response
 * sharing the prompt, not pads (segment −1). Mistral's sliding window is over the fed positions,
 * which restart with each sequence.
 */
export function packedBias(spec: ModelSpec, positions: Value, segments: Value, branches: Value, dtype: FloatType): Value {
  const g = segments.g;
  const len = O.squeeze(O.shapeOf(segments, 1, 2), [0]);
  const idx = withShape(O.range(constant(g, tensor('int64', [], [0])), len, constant(g, tensor('int64', [], [1]))), [segments.shape![1]!]);
  const causal = O.unsqueeze(O.greaterOrEqual(O.unsqueeze(idx, [1]), O.unsqueeze(idx, [0])), [0]); // [1, T, T]: query ≥ key
  let allowed = O.and(causal, O.equal(O.unsqueeze(segments, [2]), O.unsqueeze(segments, [1]))); // [R, T, T]
  const keyBranch = O.unsqueeze(branches, [1]);
  allowed = O.and(allowed, O.or(O.equal(keyBranch, 0), O.equal(O.unsqueeze(branches, [2]), keyBranch)));
  if (spec.slidingWindow !== null) allowed = O.and(allowed, O.less(O.sub(O.unsqueeze(positions, [2]), O.unsqueeze(positions, [1])), spec.slidingWindow));
  return O.unsqueeze(O.where(allowed, O.scalar(g, dtype, 0), MASKED), [1]);
}

/** Positions 0..T−1 as [1, T] int64 (right padding). */
export function sequencePositions(ids: Value): Value {
  const g = ids.g;
  const len = O.squeeze(O.shapeOf(ids, 1, 2), [0]);
  return O.unsqueeze(withShape(O.range(constant(g, tensor('int64', [], [0])), len, constant(g, tensor('int64', [], [1]))), [ids.shape![1]!]), [0]);
}

/**
 * Hidden state [B, H] at each row's last real token — the last position whose mask is 1, so
 * right- and left-padded rows both work (Σ mask − 1 is that position only under right padding):
 * for reward and safety heads, whose response ends there.
 */
export function lastTokenHidden(hidden: Value, attentionMask: Value): Value {
  const g = hidden.g;
  const H = hidden.shape![2] as number;
  const len = O.squeeze(O.shapeOf(attentionMask, 1, 2), [0]);
  const pos1 = O.cast(O.range(constant(g, tensor('int64', [], [1])), O.add(len, constant(g, tensor('int64', [], [1]))), constant(g, tensor('int64', [], [1]))), attentionMask.dtype);
  const last = O.sub(O.cast(O.reduceMax(O.mul(attentionMask, pos1), [1], false), 'int64'), 1); // [B]: max over real positions
  const idx = O.expand(O.reshape(last, [-1, 1, 1]), O.concat([O.shapeOf(hidden, 0, 1), O.ints(g, [1, H])], 0));
  return O.squeeze(O.gatherElements(hidden, idx, 1), [1]);
}

/** Hidden states [B, K, H] at the given positions [B, K] (int64). */
export function hiddenAt(hidden: Value, positions: Value): Value {
  const g = hidden.g;
  const H = hidden.shape![2] as number;
  const idx = O.expand(O.unsqueeze(positions, [2]), O.concat([O.shapeOf(positions), O.ints(g, [H])], 0));
  return O.gatherElements(hidden, idx, 1);
}
