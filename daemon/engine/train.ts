/**
 * Train-step programs: loss + metrics + gradients + global-norm clipping + AdamW in one graph, so a
 * step is one session.run. Parameters and Adam moments are inputs and come out updated; the learning
 * rate and step count are inputs so the schedule lives in TypeScript.
 *
 * AdamW as in Loshchilov & Hutter 2019 (decoupled decay), in PyTorch's torch.optim.AdamW form:
 *   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
 *   p ← p − lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε)
 * Clipping as torch.nn.utils.clip_grad_norm_: g ← g·min(1, max_norm/(‖g‖₂ + 1e-6)), ‖g‖₂ over all params.
 *
 * Gradient accumulation: gradProgram() adds each micro-batch's gradients into accumulators (inputs
 * in, sums out); applyProgram() scales the sums by `grad_scale` (1/number of micro-batches) and
 * applies clipping and AdamW.
 *
 * Names (inputs → outputs): lr, step, adam_m.<p>, adam_v.<p> → loss, <metrics>, grad_norm, new.<p>,
 * new.adam_m.<p>, new.adam_v.<p>; accumulation: acc.<p> → new.acc.<p>.
 */
import { AligndError } from '../base/errors.js';
import { grad } from './autodiff.js';
import { type Graph, type Value, graph, input, output, param } from './graph.js';
import { add, cast, div, min, mul, pow, sqrt, sub, sum, sumAll } from './ops.js';
import { type InputDecls, type NoInputs, checkDeclared } from './program-inputs.js';

export interface AdamWConfig {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Global gradient-norm clip; undefined = no clipping. */
  maxGradNorm?: number;
  /** Which parameters get weight decay (default all). */
  decay?: (name: string) => boolean;
}

export const names = {
  lr: 'lr',
  step: 'step',
  gradScale: 'grad_scale',
  loss: 'loss',
  gradNorm: 'grad_norm',
  m: (p: string): string => `adam_m.${p}`,
  v: (p: string): string => `adam_v.${p}`,
  acc: (p: string): string => `acc.${p}`,
  next: (name: string): string => `new.${name}`,
};

export interface TrainSpec<I extends InputDecls = InputDecls> {
  loss: Value;
  params: Value[];
  metrics?: Record<string, Value>;
  optimizer?: AdamWConfig;
  /**
   * The program's data inputs (program-inputs.ts). Given, they are checked against the graph and
   * type the feeds of trainStep/accumulate; omitted, the feeds are any named tensors.
   */
  inputs?: I;
}

/** What a runner needs to drive a program: the names it feeds and reads. */
export interface ProgramInfo<I extends InputDecls = InputDecls> {
  graph: Graph;
  params: string[];
  metrics: string[];
  /** The declared data inputs ({} when the program declared none). */
  inputs: I;
}

function checkParams(params: Value[]): void {
  for (const p of params) {
    if (!p.g.params.has(p.name)) {
      throw new AligndError('ENGINE_INVALID_GRAPH', `'${p.name}' is not a trainable parameter of graph '${p.g.name}'`,
        { action: 'declare it with param()' });
    }
    if (p.dtype !== 'float32' && p.dtype !== 'float64') {
      throw new AligndError('ENGINE_INVALID_GRAPH', `parameter '${p.name}' is ${p.dtype}`, { action: 'train float32 (or float64) parameters' });
    }
  }
}

/** ‖g‖₂ over all gradients, as a scalar. */
export function globalNorm(grads: Value[]): Value {
  return sqrt(sum(grads.map((d) => sumAll(mul(d, d)))));
}

/**
 * Append clipping and AdamW for `params` with gradients `grads` to their graph; declares the lr,
 * step and moment inputs and the updated outputs. Returns the pre-clip gradient norm.
 */
export function adamw(params: Value[], grads: Value[], cfg: AdamWConfig = {}): Value {
  const g = params[0]!.g;
  const dt = params[0]!.dtype;
  const b1 = cfg.beta1 ?? 0.9;
  const b2 = cfg.beta2 ?? 0.999;
  const eps = cfg.eps ?? 1e-8;
  const wd = cfg.weightDecay ?? 0.01;
  const lr = input(g, names.lr, dt, []);
  const t = cast(input(g, names.step, 'int64', []), dt);
  const norm = output(globalNorm(grads), names.gradNorm);
  let clipped = grads;
  if (cfg.maxGradNorm !== undefined) {
    const coef = min(div(cfg.maxGradNorm, add(norm, 1e-6)), 1);
    clipped = grads.map((d) => mul(d, coef));
  }
  // Bias corrections 1−β^t, computed in the graph from the step input.
  const stepSize = div(lr, sub(1, pow(b1, t)));
  const sqrtBc2 = sqrt(sub(1, pow(b2, t)));
  params.forEach((p, i) => {
    const d = clipped[i]!;
    const m = input(g, names.m(p.name), dt, p.shape!);
    const v = input(g, names.v(p.name), dt, p.shape!);
    const m2 = add(mul(m, b1), mul(d, 1 - b1));
    const v2 = add(mul(v, b2), mul(mul(d, d), 1 - b2));
    const decayed = wd !== 0 && (cfg.decay?.(p.name) ?? true) ? mul(p, sub(1, mul(lr, wd))) : p;
    const denom = add(div(sqrt(v2), sqrtBc2), eps);
    const p2 = sub(decayed, mul(stepSize, div(m2, denom)));
    output(p2, names.next(p.name));
    output(m2, names.next(names.m(p.name)));
    output(v2, names.next(names.v(p.name)));
  });
  return norm;
}

function outputMetrics(spec: TrainSpec<InputDecls>): string[] {
  output(spec.loss, names.loss);
  return Object.entries(spec.metrics ?? {}).map(([k, v]) => output(v, k).name);
}

/** The inputs a train program has besides its declared data: parameters, optimizer state, accumulators. */
function engineInput(params: Set<string>): (name: string) => boolean {
  const own = new Set<string>([names.lr, names.step, names.gradScale]);
  for (const p of params) for (const n of [names.m(p), names.v(p), names.acc(p)]) own.add(n);
  return (name) => params.has(name) || own.has(name);
}

function programInfo<I extends InputDecls>(g: Graph, paramValues: Value[], metrics: string[], inputs: I | undefined): ProgramInfo<I> {
  const params = paramValues.map((p) => p.name);
  if (inputs !== undefined) checkDeclared(g, inputs, engineInput(new Set(params)));
  return { graph: g, params, metrics, inputs: inputs ?? ({} as I) };
}

/** One program: forward, backward, clipping and AdamW. */
export function trainProgram<I extends InputDecls = InputDecls>(spec: TrainSpec<I>): ProgramInfo<I> {
  checkParams(spec.params);
  const metrics = outputMetrics(spec);
  const grads = grad(spec.loss, spec.params);
  adamw(spec.params, grads, spec.optimizer);
  return programInfo(spec.loss.g, spec.params, metrics, spec.inputs);
}

/** Micro-batch program: forward and backward; gradients are added into the acc.<p> inputs. */
export function gradProgram<I extends InputDecls = InputDecls>(spec: Omit<TrainSpec<I>, 'optimizer'>): ProgramInfo<I> {
  checkParams(spec.params);
  const metrics = outputMetrics(spec);
  const grads = grad(spec.loss, spec.params);
  const g = spec.loss.g;
  spec.params.forEach((p, i) => {
    const acc = input(g, names.acc(p.name), p.dtype, p.shape!);
    output(add(acc, grads[i]!), names.next(names.acc(p.name)));
  });
  return programInfo(g, spec.params, metrics, spec.inputs);
}

/**
 * Apply program for accumulated gradients: params and acc.<p> sums in, scaled by grad_scale, then
 * clipping and AdamW. `shapes` gives each parameter's name, dtype and shape.
 */
export function applyProgram(shapes: { name: string; dtype: 'float32' | 'float64'; shape: (number | string)[] }[],
  cfg: AdamWConfig = {}): ProgramInfo<NoInputs> {
  const g = graph('apply');
  const params = shapes.map((s) => param(g, s.name, s.dtype, s.shape));
  const scale = input(g, names.gradScale, shapes[0]!.dtype, []);
  const grads = shapes.map((s) => mul(input(g, names.acc(s.name), s.dtype, s.shape), scale));
  adamw(params, grads, cfg);
  return programInfo(g, params, [], {});
}
