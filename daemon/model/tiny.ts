/**
 * The tiny built-in model: a deterministic (seeded, no download) Llama-architecture checkpoint
 * with its tokenizer, written in the Hugging Face directory format so that the embedded default
 * and the tests go through the same loader as a user's model. Same seed → same bytes.
 *
 * Shape: vocab 384 (byte-level BPE), hidden 64, 2 layers, 4 heads / 2 kv heads (head_dim 16),
 * SwiGLU 128, tied embeddings, 256 positions: ~99k parameters, fast on a CPU.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseModelConfig, type ModelSpec } from './hf-config.js';
import { createRng } from '../base/random.js';
import { writeFileAtomicDurable } from '../base/fs-durable.js';
import { fromFloat32, numel, serializeSafetensors, type TensorEntry } from './safetensors.js';
import { tinyTokenizer } from './tiny-tokenizer.js';
import { weightSpecs } from './weights.js';

export const TINY_SEED = 20261127;

export const TINY_CONFIG = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 380,
  dtype: 'float32',
  eos_token_id: 383,
  head_dim: 16,
  hidden_act: 'silu',
  hidden_size: 64,
  initializer_range: 0.02,
  intermediate_size: 128,
  max_position_embeddings: 256,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 4,
  num_hidden_layers: 2,
  num_key_value_heads: 2,
  pad_token_id: 381,
  rms_norm_eps: 1e-6,
  rope_theta: 10000.0,
  tie_word_embeddings: true,
  vocab_size: 384,
} as const;

/**
 * A wider variant for serving tests against a real vLLM, whose CPU attention kernels take head
 * sizes from 32 up (the default's 16 is refused): hidden 128, two heads of 64. Same tokenizer.
 */
export const TINY_SERVING_SHAPE = {
  hidden_size: 128, intermediate_size: 256, num_attention_heads: 2, num_key_value_heads: 2, head_dim: 64,
} as const;

/** The dimensions a variant may change (the tokenizer, and so the vocabulary, stay). */
export type TinyShape = Partial<Record<'hidden_size' | 'intermediate_size' | 'num_attention_heads' | 'num_key_value_heads' | 'head_dim' | 'num_hidden_layers', number>>;

/** Values uniform in ±1/√fan_in for matrices (fan_in = last dim), ±0.125 for embeddings (near-uniform first predictions), small for biases. */
export function initTensors(spec: ModelSpec, seed: number): Map<string, TensorEntry> {
  const rng = createRng(seed);
  const out = new Map<string, TensorEntry>();
  for (const w of weightSpecs(spec)) {
    const v = new Float32Array(numel(w.shape));
    if (w.init === 'ones') v.fill(1);
    else if (w.init === 'normal') {
      const isEmbedding = /embed_tokens|wte|wpe/.test(w.name);
      const bound = isEmbedding ? 0.125 : w.shape.length === 1 ? 0.05 : 1 / Math.sqrt(w.shape[w.shape.length - 1]!);
      for (let i = 0; i < v.length; i++) v[i] = rng.uniform(-bound, bound);
    }
    out.set(w.name, fromFloat32(v, w.shape));
  }
  return out;
}

/** transformers writes config.json with sorted keys, indent 2 and a trailing newline. */
function configText(config: Record<string, unknown>): string {
  const sorted = Object.fromEntries(Object.keys(config).sort().map((k) => [k, config[k]]));
  return JSON.stringify(sorted, null, 2) + '\n';
}

/** Every file of the tiny checkpoint, by name. Pure: the same seed (and shape) gives the same bytes. */
export function tinyModelFiles(seed = TINY_SEED, shape: TinyShape = {}): Map<string, Uint8Array> {
  const config = { ...TINY_CONFIG, ...shape };
  const spec = parseModelConfig(config, 'tiny model config');
  const tok = tinyTokenizer(TINY_CONFIG.vocab_size);
  const enc = new TextEncoder();
  return new Map<string, Uint8Array>([
    ['config.json', enc.encode(configText(config))],
    ['model.safetensors', serializeSafetensors(initTensors(spec, seed), { format: 'pt' })],
    ['tokenizer.json', enc.encode(JSON.stringify(tok.tokenizerJson, null, 2) + '\n')],
    ['tokenizer_config.json', enc.encode(JSON.stringify(tok.tokenizerConfig, null, 2) + '\n')],
  ]);
}

/** Write the tiny checkpoint into `dir` (created if missing). */
export function writeTinyModel(dir: string, seed = TINY_SEED, shape: TinyShape = {}): void {
  mkdirSync(dir, { recursive: true });
  for (const [name, bytes] of tinyModelFiles(seed, shape)) writeFileAtomicDurable(join(dir, name), bytes);
}

/** The tiny checkpoint's directory, written on first use (the embedded default's base model). */
export function ensureTinyModel(dir: string, seed = TINY_SEED): string {
  if (!existsSync(join(dir, 'model.safetensors')) || !existsSync(join(dir, 'tokenizer.json'))) writeTinyModel(dir, seed);
  return dir;
}
