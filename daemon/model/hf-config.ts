/**
 * Hugging Face `config.json` → one internal `ModelSpec`.
 *
 * Supported `model_type`s: llama, mistral, qwen2 (the Llama family: RoPE, RMSNorm, SwiGLU,
 * grouped-query attention) and gpt2 (learned positions, LayerNorm, gelu_new, Conv1D layout).
 * Field names and defaults follow transformers' `LlamaConfig`, `MistralConfig`, `Qwen2Config`
 * and `GPT2Config`. RoPE parameters are read from `rope_theta`/`rope_scaling` (transformers 4.x)
 * or from `rope_parameters` (transformers 5.x), whichever the file has.
 */
import { z } from 'zod';
import { AligndError } from '../base/errors.js';

export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'gpt2'] as const;
export type ModelType = (typeof SUPPORTED_MODEL_TYPES)[number];

export interface RopeSpec {
  theta: number;
  /** Llama 3.1 frequency-dependent scaling (transformers `_compute_llama3_parameters`), or linear. */
  scaling:
    | null
    | { type: 'linear'; factor: number }
    | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };
}

export interface ModelSpec {
  modelType: ModelType;
  family: 'llama' | 'gpt2';
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  maxPositions: number;
  norm: 'rms' | 'layer';
  normEps: number;
  activation: 'silu' | 'gelu_new';
  /** null for learned absolute positions (GPT-2). */
  rope: RopeSpec | null;
  /** Biases on q/k/v projections (Qwen2; Llama with attention_bias). */
  qkvBias: boolean;
  /** Bias on the attention output projection (Llama with attention_bias; GPT-2 always). */
  outBias: boolean;
  /** Biases on MLP projections (Llama with mlp_bias; GPT-2 always). */
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  /** Mistral: a query sees only keys with q − k < slidingWindow; null = full causal attention. */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
}

const tokenId = z.number().int().nonnegative().nullable().optional();
const tokenIds = z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().optional();
const positiveInt = z.number().int().positive();

const ropeScalingSchema = z.looseObject({
  rope_type: z.string().optional(),
  type: z.string().optional(),
  rope_theta: z.number().positive().optional(),
  factor: z.number().positive().optional(),
  low_freq_factor: z.number().positive().optional(),
  high_freq_factor: z.number().positive().optional(),
  original_max_position_embeddings: positiveInt.optional(),
}).nullable().optional();

const llamaFamilySchema = z.looseObject({
  model_type: z.enum(['llama', 'mistral', 'qwen2']),
  vocab_size: positiveInt,
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.nullable().optional(),
  head_dim: positiveInt.nullable().optional(),
  hidden_act: z.string().optional(),
  max_position_embeddings: positiveInt.optional(),
  rms_norm_eps: z.number().positive().optional(),
  rope_theta: z.number().positive().optional(),
  rope_scaling: ropeScalingSchema,
  rope_parameters: ropeScalingSchema,
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().optional(),
  tie_word_embeddings: z.boolean().optional(),
  sliding_window: positiveInt.nullable().optional(),
  use_sliding_window: z.boolean().optional(),
  bos_token_id: tokenId,
  eos_token_id: tokenIds,
  pad_token_id: tokenId,
});

const gpt2Schema = z.looseObject({
  model_type: z.literal('gpt2'),
  vocab_size: positiveInt,
  n_embd: positiveInt,
  n_head: positiveInt,
  n_layer: positiveInt,
  n_positions: positiveInt,
  n_inner: positiveInt.nullable().optional(),
  activation_function: z.string().optional(),
  layer_norm_epsilon: z.number().positive().optional(),
  scale_attn_weights: z.boolean().optional(),
  scale_attn_by_inverse_layer_idx: z.boolean().optional(),
  reorder_and_upcast_attn: z.boolean().optional(),
  tie_word_embeddings: z.boolean().optional(),
  bos_token_id: tokenId,
  eos_token_id: tokenIds,
  pad_token_id: tokenId,
});

function unsupported(what: string, source: string, action: string): AligndError {
  return new AligndError('MODEL_UNSUPPORTED', what, { input: source, action });
}

function asIds(v: number | number[] | null | undefined): number[] {
  if (v === null || v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/** Per-architecture defaults of transformers (used when config.json omits a field). */
const LLAMA_DEFAULTS = {
  llama: { rmsEps: 1e-6, ropeTheta: 10000, maxPos: 2048, tie: false },
  mistral: { rmsEps: 1e-6, ropeTheta: 10000, maxPos: 4096 * 32, tie: false },
  qwen2: { rmsEps: 1e-6, ropeTheta: 10000, maxPos: 32768, tie: false },
} as const;

function parseRope(c: z.infer<typeof llamaFamilySchema>, source: string, defaultTheta: number): RopeSpec {
  const params = c.rope_parameters ?? c.rope_scaling ?? null;
  const theta = c.rope_theta ?? c.rope_parameters?.rope_theta ?? defaultTheta;
  const type = params?.rope_type ?? params?.type ?? 'default';
  if (params === null || type === 'default') return { theta, scaling: null };
  if (type === 'linear') {
    if (params.factor === undefined) throw unsupported('rope_scaling type linear without factor', source, 'add rope_scaling.factor');
    return { theta, scaling: { type: 'linear', factor: params.factor } };
  }
  if (type === 'llama3') {
    const { factor, low_freq_factor: lo, high_freq_factor: hi, original_max_position_embeddings: orig } = params;
    if (factor === undefined || lo === undefined || hi === undefined || orig === undefined) {
      throw new AligndError('MODEL_INVALID', 'rope_scaling type llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings', {
        input: source, action: 'copy rope_scaling from the original model\'s config.json',
      });
    }
    return { theta, scaling: { type: 'llama3', factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: orig } };
  }
  throw unsupported(`rope_scaling type "${type}" is not supported`, source, 'supported rope types: default, linear, llama3');
}

/** Validate and normalise a parsed config.json. `source` names the file in errors. */
export function parseModelConfig(raw: unknown, source = 'config.json'): ModelSpec {
  const modelType = (raw !== null && typeof raw === 'object' && 'model_type' in raw) ? (raw as { model_type: unknown }).model_type : undefined;
  if (typeof modelType !== 'string' || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw unsupported(`model_type ${JSON.stringify(modelType ?? null)} is not supported`, source,
      `alignd supports model_type ${SUPPORTED_MODEL_TYPES.join(', ')}; use a checkpoint of one of these architectures`);
  }
  const fail = (err: z.ZodError): AligndError => new AligndError('MODEL_INVALID',
    `config.json for ${modelType} is invalid: ${err.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`,
    { input: source, action: 'fix config.json or re-export it with transformers save_pretrained' });

  if (modelType === 'gpt2') {
    const p = gpt2Schema.safeParse(raw);
    if (!p.success) throw fail(p.error);
    const c = p.data;
    const act = c.activation_function ?? 'gelu_new';
    if (act !== 'gelu_new') throw unsupported(`gpt2 activation_function "${act}" is not supported`, source, 'only gelu_new (the GPT-2 default) is supported');
    if (c.scale_attn_weights === false || c.scale_attn_by_inverse_layer_idx === true) {
      throw unsupported('gpt2 with scale_attn_weights=false or scale_attn_by_inverse_layer_idx=true is not supported', source, 'use the standard GPT-2 attention scaling');
    }
    if (c.n_embd % c.n_head !== 0) throw new AligndError('MODEL_INVALID', `n_embd ${c.n_embd} is not divisible by n_head ${c.n_head}`, { input: source, action: 'fix config.json' });
    return {
      modelType: 'gpt2', family: 'gpt2', vocabSize: c.vocab_size, hiddenSize: c.n_embd, numLayers: c.n_layer,
      numHeads: c.n_head, numKvHeads: c.n_head, headDim: c.n_embd / c.n_head, intermediateSize: c.n_inner ?? 4 * c.n_embd,
      maxPositions: c.n_positions, norm: 'layer', normEps: c.layer_norm_epsilon ?? 1e-5, activation: 'gelu_new', rope: null,
      qkvBias: true, outBias: true, mlpBias: true, tieWordEmbeddings: c.tie_word_embeddings ?? true, slidingWindow: null,
      bosTokenId: c.bos_token_id ?? null, eosTokenIds: asIds(c.eos_token_id), padTokenId: c.pad_token_id ?? null,
    };
  }
  const p = llamaFamilySchema.safeParse(raw);
  if (!p.success) throw fail(p.error);
  const c = p.data;
  const d = LLAMA_DEFAULTS[c.model_type];
  const act = c.hidden_act ?? 'silu';
  if (act !== 'silu') throw unsupported(`hidden_act "${act}" is not supported for ${c.model_type}`, source, 'only silu (SwiGLU) is supported');
  const numKvHeads = c.num_key_value_heads ?? c.num_attention_heads;
  if (c.num_attention_heads % numKvHeads !== 0) {
    throw new AligndError('MODEL_INVALID', `num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${numKvHeads}`, { input: source, action: 'fix config.json' });
  }
  const headDim = c.head_dim ?? c.hidden_size / c.num_attention_heads;
  if (!Number.isInteger(headDim)) throw new AligndError('MODEL_INVALID', `hidden_size ${c.hidden_size} is not divisible by num_attention_heads ${c.num_attention_heads} and head_dim is not set`, { input: source, action: 'fix config.json' });
  if (headDim % 2 !== 0) throw new AligndError('MODEL_INVALID', `head_dim ${headDim} must be even for RoPE`, { input: source, action: 'fix config.json' });
  const attnBias = c.attention_bias ?? false;
  if (c.model_type === 'qwen2' && c.use_sliding_window === true) {
    throw unsupported('qwen2 with use_sliding_window=true is not supported', source, 'set use_sliding_window to false (the released Qwen2 models do)');
  }
  // MistralConfig's default window is 4096; Llama has none.
  const slidingWindow = c.model_type === 'mistral' ? (c.sliding_window === undefined ? 4096 : c.sliding_window) : null;
  return {
    modelType: c.model_type, family: 'llama', vocabSize: c.vocab_size, hiddenSize: c.hidden_size, numLayers: c.num_hidden_layers,
    numHeads: c.num_attention_heads, numKvHeads, headDim, intermediateSize: c.intermediate_size,
    maxPositions: c.max_position_embeddings ?? d.maxPos, norm: 'rms', normEps: c.rms_norm_eps ?? d.rmsEps, activation: 'silu',
    rope: parseRope(c, source, d.ropeTheta),
    // Qwen2 always has q/k/v biases and no o_proj bias; Llama's attention_bias puts them on all four.
    qkvBias: c.model_type === 'qwen2' ? true : attnBias, outBias: c.model_type === 'qwen2' ? false : attnBias,
    mlpBias: c.mlp_bias ?? false, tieWordEmbeddings: c.tie_word_embeddings ?? d.tie, slidingWindow,
    bosTokenId: c.bos_token_id ?? null, eosTokenIds: asIds(c.eos_token_id), padTokenId: c.pad_token_id ?? null,
  };
}
