/**
 * A Hugging Face checkpoint directory of any size with random weights, for the exact configs of
 * real models (benches, the >4 GiB test): config.json, safetensors shards named and indexed as
 * transformers writes them, the tiny tokenizer. Written tensor by tensor in chunks, so neither a
 * tensor nor a shard is ever one buffer; the values come from one seeded block of random numbers
 * (std ≈ initializer_range 0.02, as transformers initialises), each tensor reading it from its own
 * offset, norms 1. Same config and seed → same bytes.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { toBfloat16, toHalf } from '../engine/index.js';
import { parseModelConfig } from './hf-config.js';
import { createRng } from '../base/random.js';
import { writeFileAtomicDurable } from '../base/fs-durable.js';
import { INDEX_FILE, SINGLE_FILE, type TensorSpec, dtypeBytes, numel, writeSafetensorsStreaming } from './safetensors.js';
import { tinyTokenizer } from './tiny-tokenizer.js';
import { weightSpecs } from './weights.js';

export interface RandomCheckpointOptions {
  dtype: 'BF16' | 'F16' | 'F32';
  seed: number;
  /** Shard size limit (transformers' default max_shard_size is 5 GB). */
  maxShardBytes?: number;
}

const BLOCK = 1 << 22; // random values per dtype, reused at per-tensor offsets

function randomBlock(dtype: RandomCheckpointOptions['dtype'], seed: number): Uint8Array {
  const rng = createRng(seed);
  const bound = 0.02 * Math.sqrt(3); // uniform with std 0.02
  const out = new Uint8Array(BLOCK * dtypeBytes(dtype));
  const dv = new DataView(out.buffer);
  for (let i = 0; i < BLOCK; i++) {
    const v = rng.uniform(-bound, bound);
    if (dtype === 'F32') dv.setFloat32(4 * i, v, true);
    else dv.setUint16(2 * i, dtype === 'BF16' ? toBfloat16(v) : toHalf(v), true);
  }
  return out;
}

function one(dtype: RandomCheckpointOptions['dtype']): Uint8Array {
  const out = new Uint8Array(dtypeBytes(dtype));
  const dv = new DataView(out.buffer);
  if (dtype === 'F32') dv.setFloat32(0, 1, true);
  else dv.setUint16(0, dtype === 'BF16' ? toBfloat16(1) : toHalf(1), true);
  return out;
}

/** FNV-1a: a stable per-tensor start in the random block. */
function startOf(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h % BLOCK;
}

/** Write the checkpoint into `dir`; returns the file names written. */
export function writeRandomCheckpoint(dir: string, config: Record<string, unknown>, opts: RandomCheckpointOptions): string[] {
  mkdirSync(dir, { recursive: true });
  const spec = parseModelConfig(config, 'random checkpoint config');
  const { dtype } = opts;
  const el = dtypeBytes(dtype);
  const block = randomBlock(dtype, opts.seed);
  const unit = one(dtype);
  const inits = new Map(weightSpecs(spec).map((w) => [w.name, w.init]));
  const tensors: TensorSpec[] = weightSpecs(spec).map((w) => ({ name: w.name, dtype, shape: w.shape }));
  const fill = (t: TensorSpec, chunk: Uint8Array, at: number): void => {
    const init = inits.get(t.name)!;
    if (init === 'zeros') chunk.fill(0);
    else if (init === 'ones') for (let i = 0; i < chunk.byteLength; i += el) chunk.set(unit, i);
    else {
      let src = ((startOf(t.name) + at / el) % BLOCK) * el;
      for (let i = 0; i < chunk.byteLength;) {
        const n = Math.min(chunk.byteLength - i, block.byteLength - src);
        chunk.set(block.subarray(src, src + n), i);
        i += n;
        src = 0;
      }
    }
  };
  const max = opts.maxShardBytes ?? 5e9;
  const shards: TensorSpec[][] = [[]];
  let size = 0;
  for (const t of tensors) {
    const bytes = numel(t.shape) * el;
    if (size + bytes > max && shards[shards.length - 1]!.length > 0) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push(t);
    size += bytes;
  }
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => {
    const file = shards.length === 1 ? SINGLE_FILE : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    writeSafetensorsStreaming(join(dir, file), shard, fill, { format: 'pt' });
    for (const t of shard) weightMap[t.name] = file;
    files.push(file);
  });
  if (shards.length > 1) {
    const total = tensors.reduce((n, t) => n + numel(t.shape) * el, 0);
    const sorted = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    writeFileAtomicDurable(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total }, weight_map: sorted }, null, 2) + '\n');
    files.push(INDEX_FILE);
  }
  const tok = tinyTokenizer(384);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, torch_dtype: dtype === 'BF16' ? 'bfloat16' : dtype === 'F16' ? 'float16' : 'float32' }, null, 2) + '\n');
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson, null, 2) + '\n');
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig, null, 2) + '\n');
  return [...files, 'config.json', 'tokenizer.json', 'tokenizer_config.json'];
}
