/**
 * Gradient check: the gradients autodiff builds vs central finite differences of the same graph,
 * both run by onnxruntime (the differences on the CPU provider, the gradients on the provider under
 * test). loss = Σ y ⊙ r with r random (fed as an input), so every output element's Jacobian row is
 * weighted differently.
 */
import type { Test } from 'tap';
import { grad } from '../../daemon/engine/autodiff.js';
import { type Graph, type Value, graph, input, output, param } from '../../daemon/engine/graph.js';
import { mul, sumAll } from '../../daemon/engine/ops.js';
import { type Emitted, toOnnx } from '../../daemon/engine/onnx.js';
import { type OrtTensor, type RuntimeOptions, type Session, createSession, run, toOrt } from '../../daemon/engine/sessions.js';
import { type DType, type HostTensor, randomTensor } from '../../daemon/engine/tensor.js';
import { CHECK_DTYPE, TEST_EP, cpuFallbacks, testRuntime, unexpectedFallbacks } from '../harness/ep.js';

export interface Built {
  /** Parameters to differentiate, with the values to check at. */
  wrt: { v: Value; data: HostTensor }[];
  /** Other inputs (indices, masks, data). */
  feeds?: Record<string, HostTensor>;
  y: Value;
}

export type CheckDType = 'float32' | 'float64';

export interface Case {
  name: string;
  dtype?: CheckDType;
  /** Sizes of symbolic dims, and of y's dims the builder could not know (by position). */
  sizes?: Record<string, number>;
  yDims?: number[];
  build: (g: Graph, dt: CheckDType) => Built;
}

export interface CheckResult {
  name: string; relError: number; fdNorm: number; elements: number; dtype: CheckDType;
  /** Op types that ran on the CPU provider although the test's provider is another (no kernel there). */
  onCpu: string[];
}

function resolve(c: Case, y: Value): number[] {
  if (c.yDims !== undefined) return c.yDims;
  return y.shape!.map((d) => {
    if (typeof d === 'number') return d;
    const n = c.sizes?.[d];
    if (n === undefined) throw new Error(`${c.name}: size of output dim '${d}' unknown; give yDims`);
    return n;
  });
}

/** One case built in one dtype: its model, session on `rt`, feeds and parameters. */
interface Program {
  program: Emitted;
  session: Session;
  dt: CheckDType;
  feeds: Record<string, OrtTensor>;
  params: { name: string; data: Float64Array; t: HostTensor }[];
  gradCount: number;
}

async function program(c: Case, dt: CheckDType, rt: RuntimeOptions): Promise<Program> {
  const g = graph(`check_${c.name.replace(/\W+/g, '_')}`);
  const b = c.build(g, dt);
  const yDims = resolve(c, b.y);
  const r = input(g, 'r', b.y.dtype, yDims);
  const loss = output(sumAll(mul(b.y, r)), 'loss');
  const grads = grad(loss, b.wrt.map((w) => w.v));
  grads.forEach((d, i) => output(d, `grad_${i}`));
  // toOnnx's result, not its bytes: a program over a model's base weights names them as external
  // data, which the session finds through the folder toOnnx records.
  const program = toOnnx(g);
  const feeds: Record<string, OrtTensor> = { r: toOrt(randomTensor(b.y.dtype, yDims, 99)) };
  for (const [k, v] of Object.entries(b.feeds ?? {})) feeds[k] = toOrt(v);
  const params = b.wrt.map((w) => ({ name: w.v.name, data: Float64Array.from(w.data.data as Float64Array), t: w.data }));
  const p: Program = { program, session: await createSession(program, rt), dt, feeds, params, gradCount: grads.length };
  feedParams(p);
  return p;
}

function feedParams(p: Program): void {
  for (const q of p.params) p.feeds[q.name] = toOrt({ dtype: q.t.dtype, dims: q.t.dims, data: p.dt === 'float64' ? Float64Array.from(q.data) : Float32Array.from(q.data) });
}

/** Central differences of the loss w.r.t. every parameter element. */
async function centralDifferences(p: Program): Promise<number[][]> {
  const eps = p.dt === 'float64' ? 1e-5 : 1e-2;
  const lossAt = async (): Promise<number> => { feedParams(p); return Number((await run(p.session, p.feeds, ['loss']))['loss']!.data[0]); };
  const out: number[][] = [];
  for (const q of p.params) {
    const fd: number[] = [];
    for (let j = 0; j < q.data.length; j++) {
      const keep = q.data[j]!;
      q.data[j] = keep + eps;
      const up = await lossAt();
      q.data[j] = keep - eps;
      const down = await lossAt();
      q.data[j] = keep;
      fd.push((up - down) / (2 * eps));
    }
    out.push(fd);
  }
  feedParams(p);
  return out;
}

/**
 * ‖autodiff − central FD‖₂ / ‖FD‖₂ over all checked parameters. The differences are taken on the
 * CPU provider in the case's dtype (float64 unless it says otherwise); the autodiff gradients come
 * from the provider under test (test/harness/ep.ts), in float32 where it has no float64.
 */
export async function gradcheck(c: Case): Promise<CheckResult> {
  const ref = await program(c, c.dtype ?? 'float64', {});
  const dt = c.dtype ?? CHECK_DTYPE;
  const mine = TEST_EP === 'cpu' && dt === ref.dt ? ref : await program(c, dt, await testRuntime());
  const out = await run(mine.session, mine.feeds);
  const fd = await centralDifferences(ref);
  let num = 0;
  let den = 0;
  let elements = 0;
  for (let pi = 0; pi < mine.gradCount; pi++) {
    const analytic = Array.from(out[`grad_${pi}`]!.data as Float64Array, Number);
    const want = fd[pi]!;
    if (analytic.length !== want.length) throw new Error(`${c.name}: gradient ${pi} has ${analytic.length} elements, want ${want.length}`);
    analytic.forEach((a, j) => { num += (a - want[j]!) ** 2; den += want[j]! ** 2; });
    elements += want.length;
  }
  const onCpu = TEST_EP === 'cpu' ? [] : await cpuFallbacks(mine.program, mine.feeds);
  return { name: c.name, relError: Math.sqrt(num) / Math.sqrt(den), fdNorm: Math.sqrt(den), elements, dtype: dt, onCpu };
}

/** Off the CPU provider: no float op beyond the provider's known gaps ran on the CPU instead. */
export function onDevice(t: Test, r: CheckResult): void {
  if (TEST_EP === 'cpu') return;
  t.same(unexpectedFallbacks(r.onCpu), [], `${r.name}: ran on ${TEST_EP} (float ops on the CPU provider: ${r.onCpu.join(', ') || 'none'})`);
}

/** A parameter with random values in [lo, hi). */
export function rand(g: Graph, name: string, dt: DType, dims: (number | string)[], seed: number, lo = -1, hi = 1,
  sizes: Record<string, number> = {}): { v: Value; data: HostTensor } {
  const concrete = dims.map((d) => (typeof d === 'number' ? d : sizes[d]!));
  return { v: param(g, name, dt, dims), data: randomTensor(dt, concrete, seed, lo, hi) };
}
