/**
 * Plain TypeScript float32 reference forward for the Llama family and GPT-2, with LoRA.
 *
 * Slow on purpose (loops, float64 accumulation, one sequence at a time): it is the yardstick that
 * the checkpoint loader, the LoRA semantics and the parity fixtures are checked against now, and
 * the ONNX programs of the engine later. Small models only.
 *
 * Follows transformers' modeling_llama / modeling_mistral / modeling_qwen2 / modeling_gpt2:
 * - RMSNorm: w · x / √(mean(x²) + ε);  LayerNorm: w · (x − μ)/√(σ² + ε) + b (biased σ²).
 * - RoPE (Su et al., 2021) in the "rotate_half" layout: pairs (i, i + d/2), inv_freq_i = θ^(−2i/d),
 *   llama3 scaling per transformers `_compute_llama3_parameters`.
 * - Attention softmax(q·kᵀ/√d_head + causal mask) v, grouped-query heads share k/v
 *   (head h uses kv head ⌊h / (n_heads/n_kv_heads)⌋); Mistral's sliding window q − k < W.
 * - MLP: down(silu(gate(x)) ⊙ up(x)) (SwiGLU); GPT-2: c_proj(gelu_new(c_fc(x))).
 */
import type { ModelSpec, RopeSpec } from './hf-config.js';
import { applyLora, loraScaling, type LoraAdapter } from './lora.js';
import { lmHeadName, weightValues, type CheckpointWeights } from './weights.js';
import type { LogProbBatch } from './batch.js';
import { createRng } from '../base/random.js';
import { GREEDY, sampleToken, type SamplingOptions } from './sampling.js';
import { AligndError } from '../base/errors.js';

export interface ReferenceModel {
  spec: ModelSpec;
  weights: CheckpointWeights;
}

function w(model: ReferenceModel, name: string): Float32Array {
  const t = model.weights.get(name);
  if (t === undefined) throw new AligndError('INTERNAL', `reference forward: weight ${name} missing`);
  return weightValues(t);
}

/** Inverse RoPE frequencies, with the configured scaling. */
export function ropeInvFreq(rope: RopeSpec, headDim: number): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  // transformers computes inv_freq in float32; round to match it.
  for (let i = 0; i < half; i++) inv[i] = Math.fround(1 / rope.theta ** ((2 * i) / headDim));
  const s = rope.scaling;
  if (s === null) return inv;
  if (s.type === 'linear') return inv.map((f) => f / s.factor);
  const lowFreqWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositions / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) return f; // high frequency: unchanged
    if (wavelen > lowFreqWavelen) return f / s.factor; // low frequency: scaled
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}

/** x [T, in] → [T, out]; W is [out, in] (linear) or [in, out] (conv1d). */
function project(model: ReferenceModel, path: string, layout: 'linear' | 'conv1d', x: Float32Array, T: number,
  nin: number, nout: number, bias: boolean, adapter: LoraAdapter | null): Float32Array {
  const W = w(model, `${path}.weight`);
  const b = bias ? w(model, `${path}.bias`) : null;
  const y = new Float32Array(T * nout);
  for (let t = 0; t < T; t++) {
    const xo = t * nin;
    for (let o = 0; o < nout; o++) {
      let s = b === null ? 0 : b[o]!;
      if (layout === 'linear') {
        const wo = o * nin;
        for (let i = 0; i < nin; i++) s += x[xo + i]! * W[wo + i]!;
      } else {
        for (let i = 0; i < nin; i++) s += x[xo + i]! * W[i * nout + o]!;
      }
      y[t * nout + o] = s;
    }
  }
  const pair = adapter?.pairs.get(path);
  if (pair !== undefined && adapter !== null) applyLora(pair, adapter.config.r, loraScaling(adapter.config), x, y, T);
  return y;
}

function rmsNorm(x: Float32Array, T: number, H: number, weight: Float32Array, eps: number): Float32Array {
  const y = new Float32Array(T * H);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < H; i++) ss += x[t * H + i]! ** 2;
    const r = 1 / Math.sqrt(ss / H + eps);
    for (let i = 0; i < H; i++) y[t * H + i] = weight[i]! * (x[t * H + i]! * r);
  }
  return y;
}

function layerNorm(x: Float32Array, T: number, H: number, weight: Float32Array, bias: Float32Array, eps: number): Float32Array {
  const y = new Float32Array(T * H);
  for (let t = 0; t < T; t++) {
    let mean = 0;
    for (let i = 0; i < H; i++) mean += x[t * H + i]!;
    mean /= H;
    let v = 0;
    for (let i = 0; i < H; i++) v += (x[t * H + i]! - mean) ** 2;
    const r = 1 / Math.sqrt(v / H + eps);
    for (let i = 0; i < H; i++) y[t * H + i] = (x[t * H + i]! - mean) * r * weight[i]! + bias[i]!;
  }
  return y;
}

function applyRope(x: Float32Array, T: number, heads: number, d: number, inv: Float64Array): void {
  const half = d / 2;
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const ang = Math.fround(t * inv[i]!);
      const c = Math.cos(ang);
      const s = Math.sin(ang);
      for (let h = 0; h < heads; h++) {
        const o = (t * heads + h) * d;
        const a = x[o + i]!;
        const b = x[o + i + half]!;
        x[o + i] = a * c - b * s;
        x[o + i + half] = b * c + a * s;
      }
    }
  }
}

/** Causal multi-head attention; q [T, nH·d], k/v [T, nKv·d] → [T, nH·d]. */
function attention(q: Float32Array, k: Float32Array, v: Float32Array, T: number, nH: number, nKv: number, d: number,
  window: number | null): Float32Array {
  const out = new Float32Array(T * nH * d);
  const group = nH / nKv;
  const scale = 1 / Math.sqrt(d);
  const scores = new Float64Array(T);
  for (let h = 0; h < nH; h++) {
    const kh = Math.floor(h / group);
    for (let i = 0; i < T; i++) {
      const first = window === null ? 0 : Math.max(0, i - window + 1);
      let max = -Infinity;
      for (let j = first; j <= i; j++) {
        let s = 0;
        for (let e = 0; e < d; e++) s += q[(i * nH + h) * d + e]! * k[(j * nKv + kh) * d + e]!;
        scores[j] = s * scale;
        if (scores[j]! > max) max = scores[j]!;
      }
      let z = 0;
      for (let j = first; j <= i; j++) {
        scores[j] = Math.exp(scores[j]! - max);
        z += scores[j]!;
      }
      for (let e = 0; e < d; e++) {
        let s = 0;
        for (let j = first; j <= i; j++) s += scores[j]! * v[(j * nKv + kh) * d + e]!;
        out[(i * nH + h) * d + e] = s / z;
      }
    }
  }
  return out;
}

const silu = (x: number): number => x / (1 + Math.exp(-x));
/** GPT-2's tanh approximation of GELU (Hendrycks & Gimpel, 2016). */
const geluNew = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

function addInPlace(a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < a.length; i++) a[i] = a[i]! + b[i]!;
}

/** Final hidden states [T, H] (after the last norm) of one token sequence. */
export function referenceHidden(model: ReferenceModel, ids: readonly number[], adapter: LoraAdapter | null = null): Float32Array {
  const { spec } = model;
  const T = ids.length;
  const H = spec.hiddenSize;
  if (T === 0) throw new AligndError('INTERNAL', 'reference forward of an empty sequence');
  if (T > spec.maxPositions) throw new AligndError('MODEL_INVALID', `sequence of ${T} tokens exceeds the model's ${spec.maxPositions} positions`, { action: 'shorten the prompt or response' });
  const embName = spec.family === 'llama' ? 'model.embed_tokens.weight' : 'transformer.wte.weight';
  const emb = w(model, embName);
  let x: Float32Array = new Float32Array(T * H);
  for (let t = 0; t < T; t++) {
    const id = ids[t]!;
    if (!(id >= 0 && id < spec.vocabSize)) throw new AligndError('INTERNAL', `token id ${id} outside the vocabulary of ${spec.vocabSize}`);
    x.set(emb.subarray(id * H, (id + 1) * H), t * H);
  }
  if (spec.family === 'gpt2') {
    const wpe = w(model, 'transformer.wpe.weight');
    for (let t = 0; t < T; t++) for (let i = 0; i < H; i++) x[t * H + i] = x[t * H + i]! + wpe[t * H + i]!;
  }
  const { numHeads: nH, numKvHeads: nKv, headDim: d, intermediateSize: I } = spec;
  const inv = spec.rope === null ? null : ropeInvFreq(spec.rope, d);
  for (let l = 0; l < spec.numLayers; l++) {
    if (spec.family === 'llama') {
      const p = `model.layers.${l}`;
      const hIn = rmsNorm(x, T, H, w(model, `${p}.input_layernorm.weight`), spec.normEps);
      const q = project(model, `${p}.self_attn.q_proj`, 'linear', hIn, T, H, nH * d, spec.qkvBias, adapter);
      const k = project(model, `${p}.self_attn.k_proj`, 'linear', hIn, T, H, nKv * d, spec.qkvBias, adapter);
      const v = project(model, `${p}.self_attn.v_proj`, 'linear', hIn, T, H, nKv * d, spec.qkvBias, adapter);
      applyRope(q, T, nH, d, inv!);
      applyRope(k, T, nKv, d, inv!);
      const a = attention(q, k, v, T, nH, nKv, d, spec.slidingWindow);
      addInPlace(x, project(model, `${p}.self_attn.o_proj`, 'linear', a, T, nH * d, H, spec.outBias, adapter));
      const hPost = rmsNorm(x, T, H, w(model, `${p}.post_attention_layernorm.weight`), spec.normEps);
      const g = project(model, `${p}.mlp.gate_proj`, 'linear', hPost, T, H, I, spec.mlpBias, adapter);
      const u = project(model, `${p}.mlp.up_proj`, 'linear', hPost, T, H, I, spec.mlpBias, adapter);
      for (let i = 0; i < g.length; i++) g[i] = silu(g[i]!) * u[i]!;
      addInPlace(x, project(model, `${p}.mlp.down_proj`, 'linear', g, T, I, H, spec.mlpBias, adapter));
    } else {
      const p = `transformer.h.${l}`;
      const h1 = layerNorm(x, T, H, w(model, `${p}.ln_1.weight`), w(model, `${p}.ln_1.bias`), spec.normEps);
      const qkv = project(model, `${p}.attn.c_attn`, 'conv1d', h1, T, H, 3 * H, true, adapter);
      const q = new Float32Array(T * H), k = new Float32Array(T * H), v = new Float32Array(T * H);
      for (let t = 0; t < T; t++) {
        q.set(qkv.subarray(t * 3 * H, t * 3 * H + H), t * H);
        k.set(qkv.subarray(t * 3 * H + H, t * 3 * H + 2 * H), t * H);
        v.set(qkv.subarray(t * 3 * H + 2 * H, t * 3 * H + 3 * H), t * H);
      }
      const a = attention(q, k, v, T, nH, nH, d, null);
      addInPlace(x, project(model, `${p}.attn.c_proj`, 'conv1d', a, T, H, H, true, adapter));
      const h2 = layerNorm(x, T, H, w(model, `${p}.ln_2.weight`), w(model, `${p}.ln_2.bias`), spec.normEps);
      const f = project(model, `${p}.mlp.c_fc`, 'conv1d', h2, T, H, I, true, adapter);
      for (let i = 0; i < f.length; i++) f[i] = geluNew(f[i]!);
      addInPlace(x, project(model, `${p}.mlp.c_proj`, 'conv1d', f, T, I, H, true, adapter));
    }
  }
  x = spec.family === 'llama'
    ? rmsNorm(x, T, H, w(model, 'model.norm.weight'), spec.normEps)
    : layerNorm(x, T, H, w(model, 'transformer.ln_f.weight'), w(model, 'transformer.ln_f.bias'), spec.normEps);
  return x;
}

/** Logits [T, vocab] of one token sequence. */
export function referenceLogits(model: ReferenceModel, ids: readonly number[], adapter: LoraAdapter | null = null): Float32Array {
  const { spec } = model;
  const T = ids.length;
  const H = spec.hiddenSize;
  const V = spec.vocabSize;
  const x = referenceHidden(model, ids, adapter);
  const head = w(model, lmHeadName(spec));
  const logits = new Float32Array(T * V);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < V; o++) {
      let s = 0;
      for (let i = 0; i < H; i++) s += x[t * H + i]! * head[o * H + i]!;
      logits[t * V + o] = s;
    }
  }
  return logits;
}

export interface ResponseLogProbs {
  /** log p(ids[t] | ids[<t]) for each response token t ≥ promptLength. */
  perToken: Float64Array;
  sum: number;
}

/** Log-probabilities of the response tokens given the prompt (prompt tokens masked out). */
export function referenceResponseLogProbs(model: ReferenceModel, ids: readonly number[], promptLength: number,
  adapter: LoraAdapter | null = null): ResponseLogProbs {
  if (!(promptLength >= 1 && promptLength < ids.length)) {
    throw new AligndError('INTERNAL', `promptLength ${promptLength} must be in [1, ${ids.length - 1}] (one prompt token and one response token at least)`);
  }
  const V = model.spec.vocabSize;
  const logits = referenceLogits(model, ids, adapter);
  const perToken = new Float64Array(ids.length - promptLength);
  let sum = 0;
  for (let t = promptLength; t < ids.length; t++) {
    const row = (t - 1) * V; // logits at t−1 predict token t
    let max = -Infinity;
    for (let o = 0; o < V; o++) max = Math.max(max, logits[row + o]!);
    let z = 0;
    for (let o = 0; o < V; o++) z += Math.exp(logits[row + o]! - max);
    const lp = logits[row + ids[t]!]! - max - Math.log(z);
    perToken[t - promptLength] = lp;
    sum += lp;
  }
  return { perToken, sum };
}

export interface GenerateOptions {
  maxNewTokens: number;
  stopIds?: readonly number[];
  sampling?: SamplingOptions;
  seed?: number;
}

/**
 * Continue a prompt token by token (greedy by default; temperature/top-p with a seeded RNG),
 * stopping after a stop token or `maxNewTokens`. Recomputes the whole prefix each step (no KV
 * cache): the yardstick for the engine's cached generation, not a server.
 */
export function referenceGenerate(model: ReferenceModel, promptIds: readonly number[], opts: GenerateOptions,
  adapter: LoraAdapter | null = null): number[] {
  const V = model.spec.vocabSize;
  const rng = createRng(opts.seed ?? 0);
  const sampling = opts.sampling ?? GREEDY;
  const ids = [...promptIds];
  const out: number[] = [];
  for (let step = 0; step < opts.maxNewTokens; step++) {
    const logits = referenceLogits(model, ids, adapter);
    const next = sampleToken(logits, sampling, rng, (ids.length - 1) * V, V);
    out.push(next);
    ids.push(next);
    if (opts.stopIds?.includes(next)) break;
  }
  return out;
}

/** Greedy continuation (argmax, first index on ties as torch.argmax). */
export function referenceGreedy(model: ReferenceModel, promptIds: readonly number[], maxNewTokens: number,
  stopIds: readonly number[] = [], adapter: LoraAdapter | null = null): number[] {
  return referenceGenerate(model, promptIds, { maxNewTokens, stopIds }, adapter);
}

/** Summed and per-token response log-probs of every row of a packed batch (pads included in the forward). */
export function referenceBatchLogProbs(model: ReferenceModel, batch: LogProbBatch, adapter: LoraAdapter | null = null): { sums: Float64Array; perToken: Float64Array } {
  const { batch: B, length: T } = batch;
  const V = model.spec.vocabSize;
  const sums = new Float64Array(B);
  const perToken = new Float64Array(B * T);
  for (let b = 0; b < B; b++) {
    const logits = referenceLogits(model, Array.from(batch.inputIds.subarray(b * T, (b + 1) * T)), adapter);
    for (let t = 0; t < T; t++) {
      if (batch.targetMask[b * T + t] === 0) continue;
      const row = t * V;
      let max = -Infinity;
      for (let o = 0; o < V; o++) max = Math.max(max, logits[row + o]!);
      let z = 0;
      for (let o = 0; o < V; o++) z += Math.exp(logits[row + o]! - max);
      const lp = logits[row + batch.targets[b * T + t]!]! - max - Math.log(z);
      perToken[b * T + t] = lp;
      sums[b] = sums[b]! + lp;
    }
  }
  return { sums, perToken };
}
