// Paths and readers for the committed parity fixtures (made by tools/parity/run.sh).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, toFloat32 } from '../../daemon/model/safetensors.js';
import { tensor } from '../../daemon/engine/index.js';
import type { LogProbBatch } from '../../daemon/model/batch.js';
import { declareBaseWeights, declareLora } from '../../daemon/model/forward-graph.js';
import type { LoraAdapter } from '../../daemon/model/lora.js';
import { loraHostTensors, type Model } from '../../daemon/model/model.js';
import { buildLogProbs, logProbInputs } from '../../daemon/model/inference-programs.js';
import type { Case } from '../engine/gradcheck.js';

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

/**
 * A float64 gradient-check case: summed response log-probs of `batch` with respect to every LoRA
 * A and B of `adapter`, on `model`'s base weights (shared by the tiny and the parity checks).
 */
export function loraLogProbGradCase(name: string, model: Model, adapter: LoraAdapter, batch: LogProbBatch): Case {
  const host = loraHostTensors(adapter);
  return {
    name,
    yDims: [batch.batch],
    build: (g, dt) => {
      const base = declareBaseWeights(g, model.weights, dt);
      const lv = declareLora(g, model.spec, adapter.config, 'param', dt);
      const y = buildLogProbs(base, lv, logProbInputs(g, dt)).seqLogps;
      const wrt = [...lv.pairs.values()].flatMap((p) => [p.a, p.b]).map((v) => {
        const h = host[v.name]!;
        return { v, data: tensor(dt, h.dims, Float64Array.from(h.data as Float32Array)) };
      });
      const dims = [batch.batch, batch.length];
      return {
        wrt, y,
        feeds: {
          input_ids: tensor('int64', dims, Array.from(batch.inputIds)),
          attention_mask: tensor(dt, dims, Array.from(batch.attentionMask)),
          targets: tensor('int64', dims, Array.from(batch.targets)),
          target_mask: tensor(dt, dims, Array.from(batch.targetMask)),
        },
      };
    },
  };
}
