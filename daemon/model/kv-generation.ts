/**
 * Batched generation with a KV cache: one program (inference-programs.ts 'decode') run first over the
 * left-padded prompts with an empty cache (the prefill), then once per new token, the layers'
 * keys/values passed back as inputs. One program, so one copy of the base weights in memory. Left padding keeps
 * every row's next token at the last position; positions count real tokens only and the attention
 * bias hides pads (as transformers' generate does with an attention mask).
 *
 * Sampling runs in TypeScript on the last logits (sampling.ts): greedy, or temperature/top-p with
 * one seeded RNG per row (row b uses seeds[b], default seed + b), so a row's tokens do not depend
 * on what else is in the batch and a seed reproduces them.
 */
import { AligndError } from '../base/errors.js';
import { type OrtTensor, i64 } from '../engine/index.js';
import * as ort from 'onnxruntime-node';
import type { ModelSpec } from './hf-config.js';
import { MASKED } from './forward-graph.js';
import { IO } from './inference-programs.js';
import { createRng } from '../base/random.js';
import { GREEDY, sampleToken, type SamplingOptions } from './sampling.js';

export interface GenerateOptions {
  maxNewTokens: number;
  /** Generation of a row ends after it emits one of these (the stop token is kept in the output). */
  stopIds?: readonly number[];
  /** Default greedy. */
  sampling?: SamplingOptions;
  /** Row b samples with seed + b (default seed 0). */
  seed?: number;
  /** Per-row seeds (overrides seed). */
  seeds?: readonly number[];
}

export type StepRun = (feeds: Record<string, OrtTensor>) => Promise<Record<string, OrtTensor>>;

/**
 * Additive bias [B, 1, T, S] for the last T of S cached positions: key j is visible to query
 * i = S − T + t when it is a real token, j ≤ i, and (sliding window) i − j < W.
 */
export function generationBias(keyMask: readonly Uint8Array[], T: number, window: number | null): Float32Array {
  const B = keyMask.length;
  const S = keyMask[0]!.length;
  const out = new Float32Array(B * T * S).fill(MASKED);
  for (let b = 0; b < B; b++) {
    const m = keyMask[b]!;
    for (let t = 0; t < T; t++) {
      const i = S - T + t;
      const lo = window === null ? 0 : Math.max(0, i - window + 1);
      for (let j = lo; j <= i; j++) if (m[j] === 1) out[(b * T + t) * S + j] = 0;
    }
  }
  return out;
}

/** Continue each prompt (token ids); returns the new tokens of each row. */
export async function generateTokens(run: StepRun, spec: ModelSpec, prompts: readonly (readonly number[])[], opts: GenerateOptions,
  padId: number, extraFeeds: Record<string, OrtTensor> = {}): Promise<number[][]> {
  const B = prompts.length;
  if (B === 0) return [];
  if (!(Number.isInteger(opts.maxNewTokens) && opts.maxNewTokens >= 0)) {
    throw new AligndError('CONFIG_INVALID', `maxNewTokens must be a non-negative integer, got ${opts.maxNewTokens}`, { action: 'set max_new_tokens to e.g. 256' });
  }
  prompts.forEach((p, b) => {
    if (p.length === 0) throw new AligndError('EVENT_INVALID', `prompt ${b} has no tokens`, { action: 'drop empty prompts before generating' });
  });
  const L = Math.max(...prompts.map((p) => p.length));
  if (L + opts.maxNewTokens > spec.maxPositions) {
    throw new AligndError('CONFIG_INVALID', `prompt of ${L} tokens plus ${opts.maxNewTokens} new tokens exceeds the model's ${spec.maxPositions} positions`, {
      action: 'lower max_new_tokens or shorten the prompts',
    });
  }
  const sampling = opts.sampling ?? GREEDY;
  const rngs = prompts.map((_, b) => createRng(opts.seeds?.[b] ?? (opts.seed ?? 0) + b));
  const stop = new Set(opts.stopIds ?? []);
  const out: number[][] = prompts.map(() => []);
  if (opts.maxNewTokens === 0) return out;

  // Prefill: left-padded prompts.
  const ids = new Array<number>(B * L).fill(padId);
  const pos = new Array<number>(B * L).fill(0);
  const keyMask = prompts.map(() => new Uint8Array(L));
  const nextPos = new Array<number>(B);
  prompts.forEach((p, b) => {
    const off = L - p.length;
    for (let t = 0; t < p.length; t++) {
      ids[b * L + off + t] = p[t]!;
      pos[b * L + off + t] = t;
      keyMask[b]![off + t] = 1;
    }
    nextPos[b] = p.length;
  });
  const prefill: Record<string, OrtTensor> = {
    ...extraFeeds,
    [IO.inputIds]: i64([B, L], ids),
    [IO.positionIds]: i64([B, L], pos),
    [IO.attnBias]: new ort.Tensor('float32', generationBias(keyMask, L, spec.slidingWindow), [B, 1, L, L]),
  };
  const empty = [B, spec.numKvHeads, 0, spec.headDim];
  for (let l = 0; l < spec.numLayers; l++) {
    prefill[IO.pastKey(l)] = new ort.Tensor('float32', new Float32Array(0), empty);
    prefill[IO.pastValue(l)] = new ort.Tensor('float32', new Float32Array(0), empty);
  }
  let result = await run(prefill);
  const V = spec.vocabSize;
  const done = new Array<boolean>(B).fill(false);
  for (let step = 0; ; step++) {
    const logits = result[IO.logits]!.data as Float32Array;
    const chosen = new Array<number>(B).fill(padId);
    for (let b = 0; b < B; b++) {
      if (done[b]) continue;
      const tok = sampleToken(logits, sampling, rngs[b]!, b * V, V);
      out[b]!.push(tok);
      chosen[b] = tok;
      if (stop.has(tok)) done[b] = true;
    }
    if (step + 1 >= opts.maxNewTokens || done.every(Boolean)) break;
    const S = keyMask[0]!.length + 1;
    for (let b = 0; b < B; b++) {
      const m = new Uint8Array(S);
      m.set(keyMask[b]!);
      m[S - 1] = 1;
      keyMask[b] = m;
    }
    const feeds: Record<string, OrtTensor> = {
      ...extraFeeds,
      [IO.inputIds]: i64([B, 1], chosen),
      [IO.positionIds]: i64([B, 1], nextPos.map((p) => p)),
      [IO.attnBias]: new ort.Tensor('float32', generationBias(keyMask, 1, spec.slidingWindow), [B, 1, 1, S]),
    };
    for (let l = 0; l < spec.numLayers; l++) {
      feeds[IO.pastKey(l)] = result[IO.presentKey(l)]!;
      feeds[IO.pastValue(l)] = result[IO.presentValue(l)]!;
    }
    for (let b = 0; b < B; b++) nextPos[b] = nextPos[b]! + 1;
    result = await run(feeds);
  }
  return out;
}
