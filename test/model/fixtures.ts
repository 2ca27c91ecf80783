// Paths and readers for the committed parity fixtures (made by tools/parity/run.sh).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, toFloat32 } from '../../daemon/model/safetensors.js';

export const PARITY = fileURLToPath(new URL('../fixtures/parity/', import.meta.url));
export const ARCHS = ['llama', 'llama3', 'mistral', 'qwen2', 'gpt2'] as const;

export interface SequenceRecord {
  ids: number[];
  prompt_length: number;
  logprobs: number[];
  logprob_sum: number;
  logprobs_lora: number[];
  logprob_sum_lora: number;
  greedy: number[];
  greedy_lora: number[];
}

export function readJson<T>(...parts: string[]): T {
  return JSON.parse(readFileSync(join(PARITY, ...parts), 'utf8')) as T;
}

export function readLogits(...parts: string[]): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of readSafetensors(join(PARITY, ...parts)).tensors) out.set(name, toFloat32(t));
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
