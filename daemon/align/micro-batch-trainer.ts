/**
 * The micro-batch trainer: one optimizer step is the gradients of its micro-batches accumulated
 * (a gradProgram run each), then one clipped AdamW update with their mean (an applyProgram run),
 * as transformers' gradient_accumulation_steps. One path for every step, one micro-batch or many:
 * the one-program train step is no faster (bench:align, accumulate_over_step 0.99 on the tiny and
 * the ~20M model) and gives the same numbers on the tests' seeds.
 */
import {
  type Feeds, type InputDecls, type NoInputs, type StepResult, type TrainState, accumulate, applyAccumulated, initAccumulator,
} from '../engine/index.js';
import type { TrainProgram } from './context.js';

/** A micro-batch's feeds (typed by the program's declared inputs), built when it is its turn (KTO's need a reference run of their own). */
export type MicroBatch<I extends InputDecls> = () => Promise<Feeds<I>>;

export interface MicroBatchTrainer<I extends InputDecls> {
  /** One optimizer step over `microBatches` at learning rate `lr`; the loss and metrics are their means. */
  step(microBatches: MicroBatch<I>[], lr: number): Promise<StepResult>;
}

/** A trainer of `state` with the objective's gradient program and the apply program (the policy's AdamW). */
export function microBatchTrainer<I extends InputDecls>(grad: TrainProgram<I>, apply: TrainProgram<NoInputs>, state: TrainState): MicroBatchTrainer<I> {
  return {
    async step(mbs, lr) {
      const acc = initAccumulator(state);
      const metrics: Record<string, number> = {};
      for (const mb of mbs) {
        const r = await accumulate(grad.session, grad.info, state, acc, await mb());
        for (const [key, v] of Object.entries(r.metrics)) metrics[key] = (metrics[key] ?? 0) + v / mbs.length;
      }
      return { ...(await applyAccumulated(apply.session, apply.info, state, acc, lr)), metrics };
    },
  };
}
