/**
 * The policy's forward pass as an engine graph function, with LoRA parameters as graph values.
 *
 * STAND-IN: daemon/model is getting the canonical ONNX model programs (forward with LoRA, batched
 * log-probs, hidden states, KV-cache generation, `loadModel`). Until they land, alignment builds
 * its own Llama-family forward here so that rounds, guards and tests run on the real model; the
 * objectives only ever see the outputs (`tokenLogps`, `hidden`, `logits`), so swapping this file
 * for the model programs changes nothing downstream. It follows daemon/model/reference-forward.ts
 * (RMSNorm, rotate_half RoPE, grouped-query attention, SwiGLU, tied or untied head); GPT-2 and
 * Mistral's sliding window are refused here (the model programs will cover them).
 *
 * Run-time inputs besides the ids (computed in TypeScript from the padded length T, so one
 * session serves every T): `rope_cos`/`rope_sin` [T, d] and `attn_bias` [group·T, T] (the causal
 * bias tiled over the query heads that share a key/value head). Batches are right-padded
 * (daemon/model/batch.ts), so causal attention alone keeps pads out of real tokens' logits.
 */
import { AligndError } from '../errors.js';
import { type Graph, type Value, frozen, input, param, ops as O, tensor } from '../engine/index.js';
import type { Checkpoint } from '../model/checkpoint.js';
import type { ModelSpec } from '../model/config.js';
import { loraScaling, type LoraAdapter, type LoraConfig } from '../model/lora.js';
import { ropeInvFreq } from '../model/reference-forward.js';
import { lmHeadName, linearModules } from '../model/weights.js';

export interface LoraValues {
  /** module path → A [r, in], B [out, r] graph values (PEFT layout). */
  pairs: Map<string, { a: Value; b: Value }>;
  scaling: number;
}

export interface ForwardInputs {
  ids: Value;
  ropeCos: Value;
  ropeSin: Value;
  attnBias: Value;
}

export const loraName = (path: string, which: 'A' | 'B', prefix = 'lora'): string => `${prefix}.${path}.${which}`;

export function checkSupported(spec: ModelSpec): void {
  if (spec.family !== 'llama' || spec.rope === null) {
    throw new AligndError('MODEL_UNSUPPORTED', `alignment's built-in forward covers the Llama family; got ${spec.modelType}`, {
      action: 'use a Llama/Mistral/Qwen2 checkpoint until the model programs (daemon/model) provide this architecture',
    });
  }
  if (spec.slidingWindow !== null) {
    throw new AligndError('MODEL_UNSUPPORTED', 'sliding-window attention is not in alignment\'s built-in forward', { action: 'use a model without sliding_window' });
  }
}

/** Declare the run-time inputs of a forward (ids [batch, seq] int64 and the position tables). */
export function forwardInputs(g: Graph, spec: ModelSpec, prefix = ''): ForwardInputs {
  const group = spec.numHeads / spec.numKvHeads;
  return {
    ids: input(g, `${prefix}input_ids`, 'int64', ['batch', 'seq']),
    ropeCos: input(g, 'rope_cos', 'float32', ['seq', spec.headDim]),
    ropeSin: input(g, 'rope_sin', 'float32', ['seq', spec.headDim]),
    attnBias: input(g, 'attn_bias', 'float32', [group === 1 ? 'seq' : 'gseq', 'seq']),
  };
}

/** Declare trainable LoRA parameters for an adapter's config (graph inputs named lora.<path>.A/B). */
export function loraParams(g: Graph, spec: ModelSpec, cfg: LoraConfig, prefix = 'lora', trainable = true): LoraValues {
  const pairs = new Map<string, { a: Value; b: Value }>();
  const decl = trainable ? param : input;
  for (const m of linearModules(spec)) {
    if (!cfg.targetModules.some((t) => m.path === t || m.path.endsWith(`.${t}`))) continue;
    pairs.set(m.path, {
      a: decl(g, loraName(m.path, 'A', prefix), 'float32', [cfg.r, m.inFeatures]),
      b: decl(g, loraName(m.path, 'B', prefix), 'float32', [m.outFeatures, cfg.r]),
    });
  }
  return { pairs, scaling: loraScaling(cfg) };
}

/** Host-side feeds for an adapter's tensors under the names loraParams declared. */
export function loraFeeds(adapter: LoraAdapter, prefix = 'lora'): Record<string, { dims: number[]; data: Float32Array }> {
  const out: Record<string, { dims: number[]; data: Float32Array }> = {};
  for (const [path, p] of adapter.pairs) {
    out[loraName(path, 'A', prefix)] = { dims: [adapter.config.r, p.module.inFeatures], data: p.a };
    out[loraName(path, 'B', prefix)] = { dims: [p.module.outFeatures, adapter.config.r], data: p.b };
  }
  return out;
}

/** Frozen weights are declared once per graph and shared by every forward built in it. */
const weightCache = new WeakMap<Graph, Map<string, Value>>();

function weight(g: Graph, ckpt: Checkpoint, name: string, transpose: boolean): Value {
  let cache = weightCache.get(g);
  if (cache === undefined) weightCache.set(g, (cache = new Map()));
  const key = `${name}${transpose ? '.T' : ''}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  const t = ckpt.weights.get(name);
  if (t === undefined) throw new AligndError('MODEL_INVALID', `weight ${name} missing`, { input: ckpt.dir });
  let v: Value;
  if (transpose && t.shape.length === 2) {
    // Stored [out, in] as PyTorch's Linear; kept [in, out] so activations multiply it directly.
    const [o, i] = t.shape as [number, number];
    const tr = new Float32Array(o * i);
    for (let r = 0; r < o; r++) for (let c = 0; c < i; c++) tr[c * o + r] = t.values[r * i + c]!;
    v = frozen(g, key, tensor('float32', [i, o], tr));
  } else {
    v = frozen(g, key, tensor('float32', t.shape, t.values));
  }
  cache.set(key, v);
  return v;
}

function linear(g: Graph, ckpt: Checkpoint, path: string, x: Value, bias: boolean, lora: LoraValues | null): Value {
  let y = O.matmul(x, weight(g, ckpt, `${path}.weight`, true));
  if (bias) y = O.add(y, weight(g, ckpt, `${path}.bias`, false));
  const p = lora?.pairs.get(path);
  if (p !== undefined && lora !== null) {
    // LoRA (Hu et al. 2021, eq. 3): y += s · x Aᵀ Bᵀ, on the rank-r activation first (cheap).
    const h = O.matmul(x, O.transpose(p.a, [1, 0]));
    y = O.add(y, O.matmul(O.mul(h, lora.scaling), O.transpose(p.b, [1, 0])));
  }
  return y;
}

/** rotate_half RoPE (Su et al. 2021): x·cos + [−x₂, x₁]·sin over the last axis. */
function rope(x: Value, cos: Value, sin: Value, d: number): Value {
  const half = d / 2;
  const rank = x.shape!.length;
  const x1 = O.slice(x, [0], [half], [rank - 1]);
  const x2 = O.slice(x, [half], [d], [rank - 1]);
  return O.add(O.mul(x, cos), O.mul(O.concat([O.neg(x2), x1], rank - 1), sin));
}

export interface ForwardOutputs {
  /** Final hidden states after the last norm, [B, T, H]. */
  hidden: Value;
  /** [B, T, V]. */
  logits: Value;
}

export function forward(ckpt: Checkpoint, inp: ForwardInputs, lora: LoraValues | null): ForwardOutputs {
  const spec = ckpt.spec;
  checkSupported(spec);
  const g = inp.ids.g;
  const { numHeads: nH, numKvHeads: nKv, headDim: d, hiddenSize: H } = spec;
  const group = nH / nKv;
  let x = O.gather(weight(g, ckpt, 'model.embed_tokens.weight', false), inp.ids, 0);
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `model.layers.${l}`;
    const h = O.rmsNorm(x, weight(g, ckpt, `${p}.input_layernorm.weight`, false), spec.normEps);
    // q heads h = kv·group + j share kv head ⌊h/group⌋: lay q out as [B, nKv, group·T, d] so one
    // batched product per kv head covers its whole group (no k/v repeat).
    let q = O.reshape(linear(g, ckpt, `${p}.self_attn.q_proj`, h, spec.qkvBias, lora), [0, 0, nKv, group, d]);
    q = rope(O.transpose(q, [0, 2, 3, 1, 4]), inp.ropeCos, inp.ropeSin, d);
    q = O.reshape(q, [0, nKv, -1, d]);
    let k = O.reshape(linear(g, ckpt, `${p}.self_attn.k_proj`, h, spec.qkvBias, lora), [0, 0, nKv, d]);
    k = rope(O.transpose(k, [0, 2, 1, 3]), inp.ropeCos, inp.ropeSin, d);
    const v = O.transpose(O.reshape(linear(g, ckpt, `${p}.self_attn.v_proj`, h, spec.qkvBias, lora), [0, 0, nKv, d]), [0, 2, 1, 3]);
    const scores = O.add(O.matmul(q, k, { transB: true, alpha: 1 / Math.sqrt(d) }), inp.attnBias);
    let a = O.matmul(O.softmax(scores, -1), v); // [B, nKv, group·T, d]
    a = O.reshape(O.transpose(O.reshape(a, [0, nKv, group, -1, d]), [0, 3, 1, 2, 4]), [0, 0, nH * d]);
    x = O.add(x, linear(g, ckpt, `${p}.self_attn.o_proj`, a, spec.outBias, lora));
    const h2 = O.rmsNorm(x, weight(g, ckpt, `${p}.post_attention_layernorm.weight`, false), spec.normEps);
    const gate = linear(g, ckpt, `${p}.mlp.gate_proj`, h2, spec.mlpBias, lora);
    const up = linear(g, ckpt, `${p}.mlp.up_proj`, h2, spec.mlpBias, lora);
    x = O.add(x, linear(g, ckpt, `${p}.mlp.down_proj`, O.mul(O.silu(gate), up), spec.mlpBias, lora));
  }
  const hidden = O.rmsNorm(x, weight(g, ckpt, 'model.norm.weight', false), spec.normEps);
  const logits = O.matmul(hidden, weight(g, ckpt, lmHeadName(spec), true));
  void H;
  return { hidden, logits };
}

/** Σ over response tokens of log π(target): [B] sums and [B, T] per-token values (masked). */
export function responseLogps(logits: Value, targets: Value, targetMask: Value): { sums: Value; perToken: Value; logSoftmax: Value } {
  const lsm = O.logSoftmax(logits, -1);
  const picked = O.squeeze(O.gatherElements(lsm, O.unsqueeze(targets, [2]), -1), [2]);
  const perToken = O.mul(picked, targetMask);
  return { sums: O.reduceSum(perToken, [1], false), perToken, logSoftmax: lsm };
}

/** Host-side position tables for padded length T. */
export function positionFeeds(spec: ModelSpec, T: number): { cos: Float32Array; sin: Float32Array; bias: Float32Array; group: number } {
  const d = spec.headDim;
  const half = d / 2;
  const inv = ropeInvFreq(spec.rope!, d);
  const cos = new Float32Array(T * d);
  const sin = new Float32Array(T * d);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      // transformers computes the angle in float32.
      const ang = Math.fround(t * inv[i]!);
      cos[t * d + i] = cos[t * d + i + half] = Math.cos(ang);
      sin[t * d + i] = sin[t * d + i + half] = Math.sin(ang);
    }
  }
  const group = spec.numHeads / spec.numKvHeads;
  const bias = new Float32Array(group * T * T);
  for (let j = 0; j < group; j++) for (let i = 0; i < T; i++) for (let k = i + 1; k < T; k++) bias[(j * T + i) * T + k] = -1e9;
  return { cos, sin, bias, group };
}
