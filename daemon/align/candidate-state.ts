/**
 * The candidate while it trains: its adapter read from the train state, snapshots to roll back
 * to, the finiteness check, and TRAINING_DIVERGED, the error that discards it.
 */
import * as ort from 'onnxruntime-node';
import { AligndError } from '../base/errors.js';
import type { TrainState } from '../engine/index.js';
import type { LoraAdapter } from '../model/lora.js';
import { adapterFromTensors } from '../model/model.js';

/** NaN/Inf in training: the round discards the candidate and leaves the deployed version alone. */
export function diverged(what: string): AligndError {
  return new AligndError('TRAINING_DIVERGED', what, { action: 'the candidate was discarded and the deployed version is untouched; lower objective.learning_rate in the policy or check the feedback window for bad data' });
}

/** The train state's parameters as an adapter shaped like `like` (copied). */
export const stateToAdapter = (state: TrainState, like: LoraAdapter): LoraAdapter => adapterFromTensors(like, state.params);

export const finiteAdapter = (a: LoraAdapter): boolean => [...a.pairs.values()].every((p) => p.a.every(Number.isFinite) && p.b.every(Number.isFinite));

export type ParamSnapshot = Record<string, Float32Array>;

export function copyParams(state: TrainState): ParamSnapshot {
  return Object.fromEntries(Object.entries(state.params).map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
}

/** Put a snapshot's values back (the optimizer moments stay: the round stops right after). */
export function restoreParams(state: TrainState, p: ParamSnapshot): void {
  for (const [k, v] of Object.entries(p)) state.params[k] = new ort.Tensor('float32', v.slice(), state.params[k]!.dims);
}
