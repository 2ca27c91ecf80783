/**
 * A Hugging Face checkpoint directory as users have it → spec + where each weight's bytes are,
 * under its HF name (headers only: the data is memory-mapped by the engine's sessions) + tokenizer. Reads `config.json`, `model.safetensors` or the shards of
 * `model.safetensors.index.json` (F32/F16/BF16), and `tokenizer.json`/`tokenizer_config.json`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AligndError } from '../base/errors.js';
import { parseModelConfig, type ModelSpec } from './hf-config.js';
import { indexCheckpointTensors } from './safetensors.js';
import { hasTokenizer, loadTokenizer, type ModelTokenizer } from './tokenizer.js';
import { collectWeights, type CheckpointWeights } from './weights.js';

export interface Checkpoint {
  dir: string;
  spec: ModelSpec;
  /** config.json as found (kept for manifests and for writing it back). */
  rawConfig: unknown;
  weights: CheckpointWeights;
  /** null when the directory has no tokenizer.json. */
  tokenizer: ModelTokenizer | null;
}

export function readModelSpec(dir: string): { spec: ModelSpec; rawConfig: unknown } {
  const path = join(dir, 'config.json');
  if (!existsSync(path)) {
    throw new AligndError('MODEL_INVALID', 'no config.json in the checkpoint directory', {
      input: dir, action: 'point the policy\'s base model at a Hugging Face checkpoint directory (the folder save_pretrained wrote)',
    });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new AligndError('MODEL_INVALID', 'config.json is not valid JSON', { input: path, action: 'restore config.json from the original model', cause: err });
  }
  return { spec: parseModelConfig(raw, path), rawConfig: raw };
}

export function loadCheckpoint(dir: string): Checkpoint {
  const { spec, rawConfig } = readModelSpec(dir);
  const weights = collectWeights(spec, indexCheckpointTensors(dir), dir);
  const tokenizer = hasTokenizer(dir) ? loadTokenizer(dir) : null;
  if (tokenizer !== null && tokenizer.vocabSize > spec.vocabSize) {
    throw new AligndError('MODEL_INVALID', `tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${spec.vocabSize}`, {
      input: dir, action: 'the tokenizer belongs to another model; copy the model\'s own tokenizer files',
    });
  }
  return { dir, spec, rawConfig, weights, tokenizer };
}
