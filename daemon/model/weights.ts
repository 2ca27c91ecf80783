/**
 * The weights an architecture has, by their Hugging Face names and shapes, and its linear
 * modules (what LoRA can target). One table that the loader's validation, the tiny-model
 * generator, the reference forward and the PEFT key mapping all read.
 */
import { AligndError } from '../base/errors.js';
import type { ModelSpec } from './hf-config.js';
import { numel, readTensorBytes, toFloat32, type Dtype, type TensorLocation } from './safetensors.js';

/** A checkpoint's weights under their canonical HF names: where each one's bytes are (none read). */
export type CheckpointWeights = Map<string, TensorLocation>;

export interface WeightSpec {
  name: string;
  shape: number[];
  /** What the tiny generator and the Python tool fill it with. */
  init: 'normal' | 'ones' | 'zeros';
}

/** A linear map y = x·Wᵀ (+b) (`linear`, W is [out, in]) or GPT-2's Conv1D y = x·W (+b) (W is [in, out]). */
export interface LinearModule {
  /** Module path, e.g. `model.layers.0.self_attn.q_proj` or `transformer.h.0.attn.c_attn`. */
  path: string;
  /** Last path component, what `target_modules` names (q_proj, c_attn, …). */
  leaf: string;
  layout: 'linear' | 'conv1d';
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
}

export function linearModules(spec: ModelSpec): LinearModule[] {
  const out: LinearModule[] = [];
  const H = spec.hiddenSize;
  for (let i = 0; i < spec.numLayers; i++) {
    if (spec.family === 'llama') {
      const a = `model.layers.${i}.self_attn`;
      const m = `model.layers.${i}.mlp`;
      const q = spec.numHeads * spec.headDim;
      const kv = spec.numKvHeads * spec.headDim;
      out.push(
        { path: `${a}.q_proj`, leaf: 'q_proj', layout: 'linear', inFeatures: H, outFeatures: q, bias: spec.qkvBias },
        { path: `${a}.k_proj`, leaf: 'k_proj', layout: 'linear', inFeatures: H, outFeatures: kv, bias: spec.qkvBias },
        { path: `${a}.v_proj`, leaf: 'v_proj', layout: 'linear', inFeatures: H, outFeatures: kv, bias: spec.qkvBias },
        { path: `${a}.o_proj`, leaf: 'o_proj', layout: 'linear', inFeatures: q, outFeatures: H, bias: spec.outBias },
        { path: `${m}.gate_proj`, leaf: 'gate_proj', layout: 'linear', inFeatures: H, outFeatures: spec.intermediateSize, bias: spec.mlpBias },
        { path: `${m}.up_proj`, leaf: 'up_proj', layout: 'linear', inFeatures: H, outFeatures: spec.intermediateSize, bias: spec.mlpBias },
        { path: `${m}.down_proj`, leaf: 'down_proj', layout: 'linear', inFeatures: spec.intermediateSize, outFeatures: H, bias: spec.mlpBias },
      );
    } else {
      const b = `transformer.h.${i}`;
      out.push(
        { path: `${b}.attn.c_attn`, leaf: 'c_attn', layout: 'conv1d', inFeatures: H, outFeatures: 3 * H, bias: true },
        { path: `${b}.attn.c_proj`, leaf: 'c_proj', layout: 'conv1d', inFeatures: H, outFeatures: H, bias: true },
        { path: `${b}.mlp.c_fc`, leaf: 'c_fc', layout: 'conv1d', inFeatures: H, outFeatures: spec.intermediateSize, bias: true },
        { path: `${b}.mlp.c_proj`, leaf: 'c_proj', layout: 'conv1d', inFeatures: spec.intermediateSize, outFeatures: H, bias: true },
      );
    }
  }
  return out;
}

/** Every weight the architecture needs, in the order transformers' state_dict lists them. */
export function weightSpecs(spec: ModelSpec): WeightSpec[] {
  const H = spec.hiddenSize;
  const out: WeightSpec[] = [];
  const norm = (name: string): void => {
    out.push({ name: `${name}.weight`, shape: [H], init: 'ones' });
    if (spec.norm === 'layer') out.push({ name: `${name}.bias`, shape: [H], init: 'zeros' });
  };
  const lin = (m: LinearModule): void => {
    out.push({ name: `${m.path}.weight`, shape: m.layout === 'linear' ? [m.outFeatures, m.inFeatures] : [m.inFeatures, m.outFeatures], init: 'normal' });
    if (m.bias) out.push({ name: `${m.path}.bias`, shape: [m.outFeatures], init: 'normal' });
  };
  const mods = linearModules(spec);
  const perLayer = spec.family === 'llama' ? 7 : 4;
  if (spec.family === 'llama') {
    out.push({ name: 'model.embed_tokens.weight', shape: [spec.vocabSize, H], init: 'normal' });
    for (let i = 0; i < spec.numLayers; i++) {
      const ms = mods.slice(i * perLayer, (i + 1) * perLayer);
      ms.forEach(lin);
      norm(`model.layers.${i}.input_layernorm`);
      norm(`model.layers.${i}.post_attention_layernorm`);
    }
    norm('model.norm');
  } else {
    out.push({ name: 'transformer.wte.weight', shape: [spec.vocabSize, H], init: 'normal' });
    out.push({ name: 'transformer.wpe.weight', shape: [spec.maxPositions, H], init: 'normal' });
    for (let i = 0; i < spec.numLayers; i++) {
      const ms = mods.slice(i * perLayer, (i + 1) * perLayer);
      norm(`transformer.h.${i}.ln_1`);
      lin(ms[0]!);
      lin(ms[1]!);
      norm(`transformer.h.${i}.ln_2`);
      lin(ms[2]!);
      lin(ms[3]!);
    }
    norm('transformer.ln_f');
  }
  if (!spec.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [spec.vocabSize, H], init: 'normal' });
  return out;
}

/** Name of the output-embedding matrix ([vocab, hidden]); the input embedding when tied. */
export function lmHeadName(spec: ModelSpec): string {
  if (!spec.tieWordEmbeddings) return 'lm_head.weight';
  return spec.family === 'llama' ? 'model.embed_tokens.weight' : 'transformer.wte.weight';
}

/**
 * Check a checkpoint's tensors (headers: dtype and shape) against the architecture and give them
 * their canonical names. GPT-2 checkpoints saved from `GPT2Model` lack the `transformer.` prefix
 * and are accepted; attention-mask buffers (`attn.bias`, `attn.masked_bias`) are ignored.
 */
export function collectWeights<T extends { dtype: Dtype; shape: number[] }>(spec: ModelSpec, tensors: Map<string, T>, source: string): Map<string, T> {
  const out = new Map<string, T>();
  const missing: string[] = [];
  for (const w of weightSpecs(spec)) {
    let t = tensors.get(w.name);
    if (t === undefined && spec.family === 'gpt2' && w.name.startsWith('transformer.')) t = tensors.get(w.name.slice('transformer.'.length));
    if (t === undefined) {
      missing.push(w.name);
      continue;
    }
    if (t.shape.length !== w.shape.length || t.shape.some((d, i) => d !== w.shape[i])) {
      throw new AligndError('MODEL_INVALID', `weight ${w.name} has shape ${JSON.stringify(t.shape)} but config.json implies ${JSON.stringify(w.shape)}`, {
        input: source, action: 'config.json and the safetensors files do not belong together; re-export the checkpoint',
      });
    }
    if (!['F32', 'F16', 'BF16', 'F64'].includes(t.dtype)) {
      throw new AligndError('MODEL_UNSUPPORTED', `weight ${w.name} has dtype ${t.dtype}; alignd reads F32, F16, BF16 and F64 weights`, {
        input: source, action: 'use an unquantised checkpoint',
      });
    }
    out.set(w.name, t);
  }
  if (missing.length > 0) {
    const shown = missing.slice(0, 5).join(', ') + (missing.length > 5 ? `, … (${missing.length} in all)` : '');
    throw new AligndError('MODEL_INVALID', `checkpoint lacks weights the ${spec.modelType} config needs: ${shown}`, {
      input: source, action: 'check that the directory holds the full model (all shards) and that config.json matches it',
    });
  }
  return out;
}

const decoded = new WeakMap<TensorLocation, Float32Array>();

/**
 * A weight's values as float32, read from its file and kept (once per weight) for the plain-TS
 * reference forward and float64 test programs: small models only. Programs never call this.
 */
export function weightValues(t: TensorLocation): Float32Array {
  let v = decoded.get(t);
  if (v === undefined) {
    v = toFloat32({ dtype: t.dtype, shape: t.shape, data: readTensorBytes(t) });
    decoded.set(t, v);
  }
  return v;
}

export function parameterCount(spec: ModelSpec): number {
  return weightSpecs(spec).reduce((s, w) => s + numel(w.shape), 0);
}
