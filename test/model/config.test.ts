// config.json → ModelSpec for each architecture (transformers 5 files from the parity tool, and
// the transformers 4 spelling of RoPE fields), and the errors for what alignd cannot run.
import t from 'tap';
import { join } from 'node:path';
import { AligndError } from '../../daemon/base/errors.js';
import { readModelSpec, loadCheckpoint } from '../../daemon/model/hf-checkpoint.js';
import { parseModelConfig, SUPPORTED_MODEL_TYPES } from '../../daemon/model/hf-config.js';
import { ropeInvFreq } from '../../daemon/model/reference-forward.js';
import { readCheckpointTensors } from '../../daemon/model/safetensors.js';
import { collectWeights } from '../../daemon/model/weights.js';
import { PARITY, readJson } from './fixtures.js';

const spec = (arch: string) => readModelSpec(join(PARITY, arch, 'model')).spec;

t.test('llama: untied, GQA, rope_parameters default', async (t) => {
  const s = spec('llama');
  t.match(s, {
    modelType: 'llama', family: 'llama', vocabSize: 64, hiddenSize: 16, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 4,
    intermediateSize: 32, norm: 'rms', normEps: 1e-5, activation: 'silu', rope: { theta: 500, scaling: null },
    qkvBias: false, outBias: false, mlpBias: false, tieWordEmbeddings: false, slidingWindow: null, bosTokenId: 1, eosTokenIds: [2],
  });
});

t.test('llama3 rope scaling, explicit head_dim, tied', async (t) => {
  const s = spec('llama3');
  t.same(s.rope, { theta: 10000, scaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 64 } });
  t.equal(s.headDim, 8);
  t.equal(s.tieWordEmbeddings, true);
  // Bands at head_dim 8, θ=1e4, original 64: wavelength 2π (high, kept), 20π (medium, smoothed),
  // 200π and 2000π (low, divided by 8).
  const inv = ropeInvFreq(s.rope!, 8);
  t.equal(inv[0], 1);
  t.ok(inv[1]! < Math.fround(0.1) && inv[1]! > Math.fround(0.1) / 8, 'medium band interpolates');
  t.ok(Math.abs(inv[2]! - Math.fround(0.01) / 8) < 1e-12, 'low band divided by factor');
});

t.test('mistral sliding window, qwen2 q/k/v biases, gpt2 fields', async (t) => {
  t.equal(spec('mistral').slidingWindow, 6);
  t.match(spec('qwen2'), { modelType: 'qwen2', qkvBias: true, outBias: false, mlpBias: false, tieWordEmbeddings: true });
  t.match(spec('gpt2'), {
    modelType: 'gpt2', family: 'gpt2', hiddenSize: 16, numHeads: 4, numKvHeads: 4, headDim: 4, numLayers: 2, maxPositions: 32,
    intermediateSize: 64, norm: 'layer', normEps: 1e-5, activation: 'gelu_new', rope: null, tieWordEmbeddings: true,
  });
});

t.test('transformers 4 spelling (rope_theta + rope_scaling with "type") gives the same spec', async (t) => {
  const v5 = readJson<Record<string, unknown>>('llama3', 'model', 'config.json');
  const { rope_parameters: rp, ...rest } = v5 as { rope_parameters: Record<string, unknown> };
  const { rope_theta: theta, rope_type: type, ...scaling } = rp;
  const v4 = { ...rest, rope_theta: theta, rope_scaling: { ...scaling, type } };
  t.same(parseModelConfig(v4), parseModelConfig(v5));
});

t.test('defaults when fields are omitted', async (t) => {
  const s = parseModelConfig({ model_type: 'mistral', vocab_size: 10, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2 });
  t.match(s, { numKvHeads: 2, headDim: 4, normEps: 1e-6, rope: { theta: 10000, scaling: null }, slidingWindow: 4096, tieWordEmbeddings: false });
  const g = parseModelConfig({ model_type: 'gpt2', vocab_size: 10, n_embd: 8, n_head: 2, n_layer: 1, n_positions: 16 });
  t.match(g, { intermediateSize: 32, normEps: 1e-5, tieWordEmbeddings: true });
});

function errorOf(fn: () => unknown): AligndError {
  try {
    fn();
  } catch (err) {
    if (err instanceof AligndError) return err;
    throw err;
  }
  throw new Error('expected an AligndError');
}

t.test('unsupported model_type lists the supported ones', async (t) => {
  const err = errorOf(() => parseModelConfig({ model_type: 'falcon', hidden_size: 8 }, '/models/falcon/config.json'));
  t.equal(err.code, 'MODEL_UNSUPPORTED');
  t.match(err.message, /model_type "falcon" is not supported/);
  for (const m of SUPPORTED_MODEL_TYPES) t.match(err.message, m);
  t.match(err.message, /\/models\/falcon\/config\.json/);
  t.equal(errorOf(() => parseModelConfig({})).code, 'MODEL_UNSUPPORTED', 'missing model_type');
});

t.test('invalid or unsupported details are clear errors', async (t) => {
  const base = { model_type: 'llama', vocab_size: 10, hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2 };
  t.match(errorOf(() => parseModelConfig({ ...base, hidden_size: -1 })), { code: 'MODEL_INVALID', message: /hidden_size/ });
  t.match(errorOf(() => parseModelConfig({ ...base, num_key_value_heads: 3, num_attention_heads: 4 })), { code: 'MODEL_INVALID', message: /multiple of num_key_value_heads/ });
  t.match(errorOf(() => parseModelConfig({ ...base, hidden_act: 'gelu' })), { code: 'MODEL_UNSUPPORTED', message: /hidden_act "gelu"/ });
  t.match(errorOf(() => parseModelConfig({ ...base, rope_scaling: { rope_type: 'yarn', factor: 4 } })), { code: 'MODEL_UNSUPPORTED', message: /rope_scaling type "yarn".*llama3/ });
  t.match(errorOf(() => parseModelConfig({ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } })), { code: 'MODEL_INVALID', message: /low_freq_factor/ });
  t.match(errorOf(() => parseModelConfig({ model_type: 'gpt2', vocab_size: 10, n_embd: 8, n_head: 2, n_layer: 1, n_positions: 16, activation_function: 'relu' })),
    { code: 'MODEL_UNSUPPORTED', message: /activation_function "relu"/ });
});

t.test('loadCheckpoint: weights under HF names, shape mismatch is caught', async (t) => {
  const ck = loadCheckpoint(join(PARITY, 'gpt2', 'model'));
  t.same(ck.weights.get('transformer.h.0.attn.c_attn.weight')!.shape, [16, 48], 'Conv1D [in, out]');
  t.equal(ck.tokenizer, null, 'no tokenizer.json → null');
  const wrong = { ...readJson<Record<string, unknown>>('gpt2', 'model', 'config.json'), n_embd: 32, n_head: 4 };
  const err = errorOf(() => collectWeights(parseModelConfig(wrong), readCheckpointTensors(join(PARITY, 'gpt2', 'model')), 'gpt2 dir'));
  t.equal(err.code, 'MODEL_INVALID');
  t.match(err.message, /shape \[64,16\] but config\.json implies \[64,32\]/);
});

t.test('a missing weight is named', async (t) => {
  const tensors = readCheckpointTensors(join(PARITY, 'llama', 'model'));
  tensors.delete('model.layers.1.mlp.up_proj.weight');
  const err = errorOf(() => collectWeights(spec('llama'), tensors, 'llama dir'));
  t.match(err.message, /lacks weights.*model\.layers\.1\.mlp\.up_proj\.weight/);
});

t.test('GPT-2 weights saved without the transformer. prefix (GPT2Model) load under canonical names', async (t) => {
  const tensors = readCheckpointTensors(join(PARITY, 'gpt2', 'model'));
  const bare = new Map([...tensors].map(([k, v]) => [k.replace(/^transformer\./, ''), v]));
  t.ok(bare.has('h.0.attn.c_attn.weight'));
  const w = collectWeights(spec('gpt2'), bare, 'bare gpt2');
  t.same([...w.keys()].sort(), [...collectWeights(spec('gpt2'), tensors, 'gpt2').keys()].sort());
  t.ok(w.has('transformer.h.0.attn.c_attn.weight'));
});
