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
 * Weights: frozen base weights are initializers (loaded once per session), in the checkpoint's
 * own layout: `linear` weights [out, in] enter a transposed product (FusedMatMul transB; measured
 * no slower than pre-transposed copies on the CPU provider, and no second copy of the model in
 * memory), GPT-2's Conv1D weights [in, out] a plain MatMul; a tied head reuses the embedding.
 *
 * LoRA (PEFT layout, A [r, in], B [out, r]): y += scaling · (dropout(x)·Aᵀ)·Bᵀ, the scaling on the
 * rank-r product. A and B are trainable parameters ('param'), plain graph inputs fed on every run
 * ('input', how inference programs swap adapters without rebuilding), or initializers ('fixed').
 */
import { AligndError } from '../base/errors.js';
import { A, type Graph, type Value, constant, emit, frozen, input, ops as O, param, tensor } from '../engine/index.js';
import type { ModelSpec } from './hf-config.js';
import { loraScaling, loraTargets, type LoraAdapter, type LoraConfig } from './lora.js';
import { ropeInvFreq } from './reference-forward.js';
import { linearModules, lmHeadName, type LinearModule, type NamedTensors } from './weights.js';

export type FloatType = 'float32' | 'float64';

/** Additive bias for masked attention scores (exp(−1e9 − max) is 0 in float32). */
export const MASKED = -1e9;

export interface BaseWeights {
  spec: ModelSpec;
  dtype: FloatType;
  /** The frozen weight under its Hugging Face name. */
  get(name: string): Value;
}

/** A checkpoint's float32 weights as graphs read them (shared by every program, not copied). */
export interface GraphWeights {
  spec: ModelSpec;
  /** HF name → shape and values. */
  tensors: Map<string, { shape: number[]; values: Float32Array }>;
}

export function graphWeights(spec: ModelSpec, weights: NamedTensors): GraphWeights {
  return { spec, tensors: weights };
}

/**
 * Declare the base weights in `g` as initializers, each on first use (a program that never reads
 * the lm head does not carry it). `storage: 'float16'` halves the program size.
 */
export function declareBaseWeights(g: Graph, w: GraphWeights, dtype: FloatType = 'float32', opts: { storage?: 'float16' } = {}): BaseWeights {
  const made = new Map<string, Value>();
  return {
    spec: w.spec,
    dtype,
    get(name: string): Value {
      const hit = made.get(name);
      if (hit !== undefined) return hit;
      const t = w.tensors.get(name);
      if (t === undefined) throw new AligndError('INTERNAL', `forward graph: weight ${name} is not in the checkpoint`);
      const data = dtype === 'float32' ? t.values : Float64Array.from(t.values);
      const v = frozen(g, name, tensor(dtype, t.shape, data), opts.storage === undefined ? {} : { storage: opts.storage });
      made.set(name, v);
      return v;
    },
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
  let y = O.matmul(x, base.get(`${m.path}.weight`), m.layout === 'linear' ? { transB: true } : {});
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
function attention(spec: ModelSpec, q: Value, k: Value, v: Value, bias: Value, past: { key: Value; value: Value } | undefined,
  rot: { cos: Value; sin: Value } | null): { out: Value; key: Value; value: Value } {
  const { numHeads: nH, numKvHeads: nKv, headDim: d } = spec;
  const group = nH / nKv;
  let q4 = O.reshape(q, [0, 0, nH, d]);
  let k4 = O.reshape(k, [0, 0, nKv, d]);
  if (rot !== null) {
    q4 = rope(q4, rot.cos, rot.sin, d);
    k4 = rope(k4, rot.cos, rot.sin, d);
  }
  let key = O.transpose(k4, [0, 2, 1, 3]);
  let value = O.transpose(O.reshape(v, [0, 0, nKv, d]), [0, 2, 1, 3]);
  if (past !== undefined) {
    key = O.concat([past.key, key], 2);
    value = O.concat([past.value, value], 2);
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
  if (spec.family === 'llama') {
    let x = O.gather(base.get('model.embed_tokens.weight'), inp.ids, 0);
    const rot = ropeTables(spec, inp.positions, base.dtype);
    for (let l = 0; l < spec.numLayers; l++) {
      const [qm, km, vm, om, gm, um, dm] = mods.slice(l * perLayer, (l + 1) * perLayer) as [LinearModule, LinearModule, LinearModule, LinearModule, LinearModule, LinearModule, LinearModule];
      const p = `model.layers.${l}`;
      const h = O.rmsNorm(x, base.get(`${p}.input_layernorm.weight`), eps);
      const att = attention(spec, project(base, lora, qm, h), project(base, lora, km, h), project(base, lora, vm, h), inp.bias, inp.past?.[l], rot);
      present.push({ key: att.key, value: att.value });
      x = O.add(x, project(base, lora, om, att.out));
      const h2 = O.rmsNorm(x, base.get(`${p}.post_attention_layernorm.weight`), eps);
      const act = O.mul(O.silu(project(base, lora, gm, h2)), project(base, lora, um, h2));
      x = O.add(x, project(base, lora, dm, act));
    }
    return { hidden: O.rmsNorm(x, base.get('model.norm.weight'), eps), present };
  }
  const H = spec.hiddenSize;
  let x = O.add(O.gather(base.get('transformer.wte.weight'), inp.ids, 0), O.gather(base.get('transformer.wpe.weight'), inp.positions, 0));
  for (let l = 0; l < spec.numLayers; l++) {
    const [am, pm, fm, cm] = mods.slice(l * perLayer, (l + 1) * perLayer) as [LinearModule, LinearModule, LinearModule, LinearModule];
    const p = `transformer.h.${l}`;
    const h = O.layerNorm(x, base.get(`${p}.ln_1.weight`), base.get(`${p}.ln_1.bias`), { epsilon: eps });
    const [q, k, v] = O.split(project(base, lora, am, h), [H, H, H], 2) as [Value, Value, Value];
    const att = attention(spec, q, k, v, inp.bias, inp.past?.[l], null);
    present.push({ key: att.key, value: att.value });
    x = O.add(x, project(base, lora, pm, att.out));
    const h2 = O.layerNorm(x, base.get(`${p}.ln_2.weight`), base.get(`${p}.ln_2.bias`), { epsilon: eps });
    x = O.add(x, project(base, lora, cm, O.gelu(project(base, lora, fm, h2), 'tanh')));
  }
  return { hidden: O.layerNorm(x, base.get('transformer.ln_f.weight'), base.get('transformer.ln_f.bias'), { epsilon: eps }), present };
}

/** Logits [..., vocab] of hidden states [..., H]; the head (tied or not) is [vocab, H]. */
export function lmHead(base: BaseWeights, hidden: Value): Value {
  return O.matmul(hidden, base.get(lmHeadName(base.spec)), { transB: true });
}

/**
 * In-graph attention bias for right-padded sequences without a cache: causal (and Mistral's
 * sliding window) from the sequence length, plus −1e9 on padded keys. Returns [B, 1, T, T].
 */
export function sequenceBias(spec: ModelSpec, attentionMask: Value, dtype: FloatType): Value {
  const g = attentionMask.g;
  const len = O.squeeze(O.shapeOf(attentionMask, 1, 2), [0]);
  const pos = O.range(constant(g, tensor('int64', [], [0])), len, constant(g, tensor('int64', [], [1])));
  const diff = O.sub(O.unsqueeze(pos, [1]), O.unsqueeze(pos, [0])); // query − key
  let allowed = O.greaterOrEqual(diff, 0);
  if (spec.slidingWindow !== null) allowed = O.and(allowed, O.less(diff, spec.slidingWindow));
  const causal = O.where(allowed, O.scalar(g, dtype, 0), MASKED);
  const pad = O.unsqueeze(O.mul(O.sub(attentionMask, 1), -MASKED), [1, 2]); // 0 for real keys, −1e9 for pads
  return O.add(O.unsqueeze(causal, [0, 1]), pad);
}

/** Positions 0..T−1 as [1, T] int64 (right padding). */
export function sequencePositions(ids: Value): Value {
  const g = ids.g;
  const len = O.squeeze(O.shapeOf(ids, 1, 2), [0]);
  return O.unsqueeze(O.range(constant(g, tensor('int64', [], [0])), len, constant(g, tensor('int64', [], [1]))), [0]);
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
