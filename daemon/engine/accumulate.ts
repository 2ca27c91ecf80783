/**
 * Driving train programs: the optimizer state held between steps, one step per session.run, and
 * gradient accumulation over micro-batches. A step whose loss or gradient norm is not finite
 * throws TRAINING_DIVERGED and leaves the state as it was.
 */
import { AligndError } from '../base/errors.js';
import { type OrtTensor, type Session, run, scalarOrt, toOrt } from './sessions.js';
import { type HostTensor } from './tensor.js';
import { type ProgramInfo, names } from './train.js';
import { type Feeds, type InputDecls, checkFeeds } from './program-inputs.js';
import * as ort from 'onnxruntime-node';

export interface TrainState {
  params: Record<string, OrtTensor>;
  m: Record<string, OrtTensor>;
  v: Record<string, OrtTensor>;
  /** Steps taken so far (the next step is step + 1, as Adam's t). */
  step: number;
  dtype: 'float32' | 'float64';
}

export interface StepResult { loss: number; gradNorm: number; metrics: Record<string, number> }

const zerosOf = (t: HostTensor): OrtTensor => toOrt({ dtype: t.dtype, dims: t.dims, data: new (t.data.constructor as Float32ArrayConstructor)(t.data.length) });

/** Fresh optimizer state for initial parameter values (moments zero). */
export function initState(values: Record<string, HostTensor>): TrainState {
  const params: Record<string, OrtTensor> = {};
  const m: Record<string, OrtTensor> = {};
  const v: Record<string, OrtTensor> = {};
  let dtype: 'float32' | 'float64' = 'float32';
  for (const [k, t] of Object.entries(values)) {
    if (t.dtype === 'float64') dtype = 'float64';
    params[k] = toOrt({ dtype: t.dtype, dims: t.dims, data: t.data.slice() });
    m[k] = zerosOf(t);
    v[k] = zerosOf(t);
  }
  return { params, m, v, step: 0, dtype };
}

async function scalarOf(t: OrtTensor | undefined): Promise<number> {
  if (t === undefined) return NaN;
  const d = (t.location === 'cpu' ? t.data : await t.getData(true)) as ArrayLike<number>;
  return Number(d[0]);
}

function optimizerFeeds(info: ProgramInfo<InputDecls>, state: TrainState, lr: number): Record<string, OrtTensor> {
  const feeds: Record<string, OrtTensor> = {
    [names.lr]: scalarOrt(state.dtype, lr),
    [names.step]: new ort.Tensor('int64', BigInt64Array.of(BigInt(state.step + 1)), []),
  };
  for (const p of info.params) {
    feeds[p] = state.params[p]!;
    feeds[names.m(p)] = state.m[p]!;
    feeds[names.v(p)] = state.v[p]!;
  }
  return feeds;
}

/** Device-resident tensors (WebGPU 'gpu-buffer' outputs) are freed explicitly when replaced. */
function release(t: OrtTensor | undefined): void {
  if (t !== undefined && t.location === 'gpu-buffer') t.dispose();
}

function adopt(info: ProgramInfo<InputDecls>, state: TrainState, out: Record<string, OrtTensor>): void {
  for (const p of info.params) {
    release(state.params[p]);
    release(state.m[p]);
    release(state.v[p]);
    state.params[p] = out[names.next(p)]!;
    state.m[p] = out[names.next(names.m(p))]!;
    state.v[p] = out[names.next(names.v(p))]!;
  }
  state.step += 1;
}

function diverged(what: string, step: number, value: number): AligndError {
  return new AligndError('TRAINING_DIVERGED', `${what} is ${value} at step ${step}`,
    { input: `step ${step}`, action: 'the update was discarded; lower the learning rate or set maxGradNorm, and check the batch for bad values' });
}

/**
 * One training step with a trainProgram(): forward, backward, clipping and AdamW in one run.
 * `batch` is typed by the program's declared inputs (program-inputs.ts).
 */
export async function trainStep<I extends InputDecls>(session: Session, info: ProgramInfo<I>, state: TrainState,
  batch: NoInfer<Feeds<I>>, lr: number): Promise<StepResult> {
  if (Object.keys(info.inputs).length > 0) checkFeeds(info.inputs, batch, info.graph.name);
  const out = await run(session, { ...batch, ...optimizerFeeds(info, state, lr) });
  const loss = await scalarOf(out[names.loss]);
  const gradNorm = await scalarOf(out[names.gradNorm]);
  if (!Number.isFinite(loss)) throw diverged('loss', state.step + 1, loss);
  if (!Number.isFinite(gradNorm)) throw diverged('gradient norm', state.step + 1, gradNorm);
  const metrics: Record<string, number> = {};
  for (const k of info.metrics) metrics[k] = await scalarOf(out[k]);
  adopt(info, state, out);
  return { loss, gradNorm, metrics };
}

/** Gradient sums being accumulated over micro-batches. */
export interface Accumulator { sums: Record<string, OrtTensor>; microBatches: number; lossSum: number }

export function initAccumulator(state: TrainState): Accumulator {
  const sums: Record<string, OrtTensor> = {};
  for (const [k, t] of Object.entries(state.params)) {
    sums[k] = new ort.Tensor(t.type as 'float32', new (t.type === 'float64' ? Float64Array : Float32Array)(t.size), t.dims);
  }
  return { sums, microBatches: 0, lossSum: 0 };
}

/** Run a gradProgram() on one micro-batch and add its gradients into `acc`. */
export async function accumulate<I extends InputDecls>(session: Session, info: ProgramInfo<I>, state: TrainState, acc: Accumulator,
  batch: NoInfer<Feeds<I>>): Promise<{ loss: number; metrics: Record<string, number> }> {
  if (Object.keys(info.inputs).length > 0) checkFeeds(info.inputs, batch, info.graph.name);
  const feeds: Record<string, OrtTensor> = { ...batch };
  for (const p of info.params) {
    feeds[p] = state.params[p]!;
    feeds[names.acc(p)] = acc.sums[p]!;
  }
  const out = await run(session, feeds);
  const loss = await scalarOf(out[names.loss]);
  if (!Number.isFinite(loss)) throw diverged('micro-batch loss', state.step + 1, loss);
  for (const p of info.params) {
    release(acc.sums[p]);
    acc.sums[p] = out[names.next(names.acc(p))]!;
  }
  acc.microBatches += 1;
  acc.lossSum += loss;
  const metrics: Record<string, number> = {};
  for (const k of info.metrics) metrics[k] = await scalarOf(out[k]);
  return { loss, metrics };
}

/** Apply the mean of the accumulated gradients with an applyProgram(); resets nothing (make a new accumulator). */
export async function applyAccumulated(session: Session, info: ProgramInfo<InputDecls>, state: TrainState, acc: Accumulator,
  lr: number): Promise<StepResult> {
  const feeds = optimizerFeeds(info, state, lr);
  feeds[names.gradScale] = scalarOrt(state.dtype, 1 / Math.max(1, acc.microBatches));
  for (const p of info.params) feeds[names.acc(p)] = acc.sums[p]!;
  const out = await run(session, feeds);
  const gradNorm = await scalarOf(out[names.gradNorm]);
  if (!Number.isFinite(gradNorm)) throw diverged('gradient norm', state.step + 1, gradNorm);
  adopt(info, state, out);
  return { loss: acc.lossSum / Math.max(1, acc.microBatches), gradNorm, metrics: {} };
}
