/**
 * Gradient check: the gradients autodiff builds vs central finite differences of the same graph,
 * both run by onnxruntime. loss = Σ y ⊙ r with r random (fed as an input), so every output
 * element's Jacobian row is weighted differently.
 */
import { grad } from '../../daemon/engine/autodiff.js';
import { type Graph, type Value, graph, input, output, param } from '../../daemon/engine/graph.js';
import { mul, sumAll } from '../../daemon/engine/ops.js';
import { toOnnx } from '../../daemon/engine/onnx.js';
import { createSession, run, toOrt } from '../../daemon/engine/sessions.js';
import { type DType, type HostTensor, randomTensor, sizeOf } from '../../daemon/engine/tensor.js';

export interface Built {
  /** Parameters to differentiate, with the values to check at. */
  wrt: { v: Value; data: HostTensor }[];
  /** Other inputs (indices, masks, data). */
  feeds?: Record<string, HostTensor>;
  y: Value;
}

export interface Case {
  name: string;
  dtype?: DType;
  /** Sizes of symbolic dims, and of y's dims the builder could not know (by position). */
  sizes?: Record<string, number>;
  yDims?: number[];
  build: (g: Graph, dt: DType) => Built;
}

export interface CheckResult { name: string; relError: number; fdNorm: number; elements: number }

function resolve(c: Case, y: Value): number[] {
  if (c.yDims !== undefined) return c.yDims;
  return y.shape!.map((d) => {
    if (typeof d === 'number') return d;
    const n = c.sizes?.[d];
    if (n === undefined) throw new Error(`${c.name}: size of output dim '${d}' unknown; give yDims`);
    return n;
  });
}

/** ‖autodiff − central FD‖₂ / ‖FD‖₂ over all checked parameters. */
export async function gradcheck(c: Case): Promise<CheckResult> {
  const dt = c.dtype ?? 'float64';
  const eps = dt === 'float64' ? 1e-5 : 1e-2;
  const g = graph(`check_${c.name.replace(/\W+/g, '_')}`);
  const b = c.build(g, dt);
  const yDims = resolve(c, b.y);
  const r = input(g, 'r', b.y.dtype, yDims);
  const loss = output(sumAll(mul(b.y, r)), 'loss');
  const grads = grad(loss, b.wrt.map((w) => w.v));
  grads.forEach((d, i) => output(d, `grad_${i}`));
  const session = await createSession(toOnnx(g).bytes);

  const feeds: Record<string, ReturnType<typeof toOrt>> = { r: toOrt(randomTensor(b.y.dtype, yDims, 99)) };
  for (const [k, v] of Object.entries(b.feeds ?? {})) feeds[k] = toOrt(v);
  const params = b.wrt.map((w) => ({ name: w.v.name, data: Float64Array.from(w.data.data as Float64Array), t: w.data }));
  const feedParams = (): void => {
    for (const p of params) feeds[p.name] = toOrt({ dtype: p.t.dtype, dims: p.t.dims, data: dt === 'float64' ? Float64Array.from(p.data) : Float32Array.from(p.data) });
  };
  feedParams();
  const out = await run(session, feeds);
  const analytic = grads.map((_, i) => Array.from(out[`grad_${i}`]!.data as Float64Array, Number));

  let num = 0;
  let den = 0;
  let elements = 0;
  for (let pi = 0; pi < params.length; pi++) {
    const p = params[pi]!;
    for (let j = 0; j < p.data.length; j++) {
      const keep = p.data[j]!;
      p.data[j] = keep + eps;
      feedParams();
      const up = Number((await run(session, feeds, ['loss']))['loss']!.data[0]);
      p.data[j] = keep - eps;
      feedParams();
      const down = Number((await run(session, feeds, ['loss']))['loss']!.data[0]);
      p.data[j] = keep;
      const fd = (up - down) / (2 * eps);
      const a = analytic[pi]![j]!;
      num += (a - fd) ** 2;
      den += fd ** 2;
      elements++;
    }
    if (analytic[pi]!.length !== sizeOf(p.t.dims)) throw new Error(`${c.name}: gradient ${pi} has ${analytic[pi]!.length} elements, want ${sizeOf(p.t.dims)}`);
  }
  return { name: c.name, relError: Math.sqrt(num) / Math.sqrt(den), fdNorm: Math.sqrt(den), elements };
}

/** A parameter with random values in [lo, hi). */
export function rand(g: Graph, name: string, dt: DType, dims: (number | string)[], seed: number, lo = -1, hi = 1,
  sizes: Record<string, number> = {}): { v: Value; data: HostTensor } {
  const concrete = dims.map((d) => (typeof d === 'number' ? d : sizes[d]!));
  return { v: param(g, name, dt, dims), data: randomTensor(dt, concrete, seed, lo, hi) };
}
