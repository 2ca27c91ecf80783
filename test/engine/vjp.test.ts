/**
 * Every VJP rule against central finite differences, in float64 on random shapes with
 * broadcasting (relative error ≤ 1e-6). Erf and erf-GELU have no float64 kernel on the CPU
 * provider, and LayerNormalization's saved statistics (used by its float32 rule) exist only in
 * float32, so those are checked in float32 (eps 1e-2) with a stated tolerance of 5e-3.
 * On WebGPU (ALIGND_TEST_EP=webgpu, no float64 there) the autodiff gradients are computed in float32
 * on the device and compared with the same float64 differences (taken on the CPU provider): ≤ 1e-5.
 */
import t from 'tap';
import { grad } from '../../daemon/engine/autodiff.js';
import { type Graph, type Value, constant, emit, graph, input, output, param } from '../../daemon/engine/graph.js';
import * as O from '../../daemon/engine/ops.js';
import { toOnnx } from '../../daemon/engine/onnx.js';
import { createSession, f64, numbers, run } from '../../daemon/engine/sessions.js';
import { randomTensor, tensor } from '../../daemon/engine/tensor.js';
import { type Case, type CheckDType, gradcheck, onDevice, rand } from './gradcheck.js';

const F64_TOL = 1e-6;
const F32_TOL = 5e-3;
/** float32 autodiff against float64 differences (WebGPU; measured ≤ 2.1e-7 on lavapipe). */
const F32_VS_F64_TOL = 1e-5;

const idx = (g: Graph, dims: number[], values: number[]): Value => constant(g, tensor('int64', dims, values));

/** Unary op on one parameter with values in [lo, hi). */
const unary = (name: string, f: (x: Value) => Value, lo = -1.5, hi = 1.5, dims = [3, 4], dtype?: CheckDType): Case => ({
  name, ...(dtype ? { dtype } : {}),
  build: (g, dt) => { const x = rand(g, 'x', dt, dims, 1, lo, hi); return { wrt: [x], y: f(x.v) }; },
});

/** Binary op on two parameters of the given (broadcasting) shapes. */
const binary = (name: string, f: (a: Value, b: Value) => Value, da: number[], db: number[], lo = -1.5, hi = 1.5): Case => ({
  name,
  build: (g, dt) => {
    const a = rand(g, 'a', dt, da, 2, lo, hi);
    const b = rand(g, 'b', dt, db, 3, lo, hi);
    return { wrt: [a, b], y: f(a.v, b.v) };
  },
});

const cases: Case[] = [
  binary('Add broadcast [3,4]+[4]', O.add, [3, 4], [4]),
  binary('Add both broadcast [2,1,4]+[3,1]', O.add, [2, 1, 4], [3, 1]),
  binary('Sub [3,1]-[1,4]', O.sub, [3, 1], [1, 4]),
  binary('Mul [2,3,4]*[3,1]', O.mul, [2, 3, 4], [3, 1]),
  binary('Div [3,4]/[4]', O.div, [3, 4], [4], 0.5, 2),
  binary('Pow [3,4]^[4]', O.pow, [3, 4], [4], 0.5, 2),
  binary('Max [3,4],[4]', O.max, [3, 4], [4]),
  binary('Min [2,3],[2,1]', O.min, [2, 3], [2, 1]),
  binary('Sum [3,4],[4]', (a, b) => O.sum([a, b, a]), [3, 4], [4]),
  unary('Neg', O.neg),
  unary('Pow x^2 (constant)', (x) => O.pow(x, 2)),
  unary('Pow x^3.5 (constant)', (x) => O.pow(x, 3.5), 0.5, 2),
  unary('Sqrt', O.sqrt, 0.3, 2),
  unary('Reciprocal', O.reciprocal, 0.3, 2),
  unary('Exp', O.exp),
  unary('Log', O.log, 0.3, 2),
  unary('Sigmoid', O.sigmoid, -3, 3),
  unary('Tanh', O.tanh),
  unary('Relu', O.relu),
  unary('Abs', O.abs),
  unary('Cos', O.cos, -3, 3),
  unary('Sin', O.sin, -3, 3),
  unary('Clip', (x) => O.clip(x, -0.7, 0.6)),
  unary('Gelu tanh', (x) => O.gelu(x, 'tanh'), -3, 3),
  unary('SiLU', O.silu, -4, 4),
  unary('softplus (stable, large |x|)', O.softplus, -40, 40),
  unary('log-sigmoid (stable, large |x|)', O.logSigmoid, -40, 40),
  unary('Identity chain x*x+x (sums contributions)', (x) => O.add(O.mul(x, x), x)),
  unary('Cast', (x) => O.exp(emit(x.g, 'Cast', [x], { to: { type: 'int', v: x.dtype === 'float64' ? 11 : 1 } }, [{ dtype: x.dtype, shape: x.shape }])[0]!)),
  unary('ReduceSum keepdims', (x) => O.reduceSum(x, [1]), -1, 1, [2, 3, 4]),
  unary('ReduceSum no keepdims', (x) => O.reduceSum(x, [0, 2], false), -1, 1, [2, 3, 4]),
  unary('ReduceMean', (x) => O.reduceMean(x, [0, 2], false), -1, 1, [2, 3, 4]),
  unary('ReduceMax', (x) => O.reduceMax(x, [-1], false), -1, 1, [3, 5]),
  unary('Softmax last axis', (x) => O.softmax(x, -1), -2, 2, [2, 3, 4]),
  unary('Softmax axis 1', (x) => O.softmax(x, 1), -2, 2, [2, 3, 4]),
  unary('LogSoftmax', (x) => O.logSoftmax(x, -1), -2, 2, [3, 5]),
  unary('Reshape', (x) => O.mul(O.reshape(x, [4, -1]), constant(x.g, randomTensor(x.dtype, [4, 3], 5))), -1, 1, [2, 3, 2]),
  unary('Transpose', (x) => O.mul(O.transpose(x, [2, 0, 1]), constant(x.g, randomTensor(x.dtype, [4, 2, 3], 5))), -1, 1, [2, 3, 4]),
  unary('Squeeze/Unsqueeze', (x) => O.exp(O.unsqueeze(O.squeeze(x, [1]), [0, 3])), -1, 1, [3, 1, 2]),
  unary('Slice (negative start, axes)', (x) => O.slice(x, [-3, 1], [2 ** 62, 3], [2, 0]), -1, 1, [4, 3, 5]),
  unary('Split (one piece unused)', (x) => { const [a, , c] = O.split(x, [1, 2, 2], 1); return O.mul(a!, c!); }, -1, 1, [3, 5]),
  unary('Expand [3,1]→[2,3,4]', (x) => O.expand(x, [2, 3, 4]), -1, 1, [3, 1]),
  {
    name: 'Concat of three',
    build: (g, dt) => {
      const a = rand(g, 'a', dt, [2, 3], 1); const b = rand(g, 'b', dt, [2, 1], 2); const c = rand(g, 'c', dt, [2, 2], 3);
      return { wrt: [a, b, c], y: O.concat([a.v, b.v, O.mul(c.v, c.v)], 1) };
    },
  },
  {
    name: 'Where broadcast',
    build: (g, dt) => {
      const a = rand(g, 'a', dt, [3, 4], 1); const b = rand(g, 'b', dt, [4], 2);
      const cond = constant(g, tensor('bool', [3, 4], [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1]));
      return { wrt: [a, b], y: O.where(cond, a.v, b.v) };
    },
  },
  {
    name: 'LayerNormalization (last axis, γ and β)',
    build: (g, dt) => {
      const x = rand(g, 'x', dt, [2, 3, 5], 1, -2, 2); const s = rand(g, 's', dt, [5], 2, 0.5, 1.5); const b = rand(g, 'b', dt, [5], 3);
      return { wrt: [x, s, b], y: O.layerNorm(x.v, s.v, b.v, { epsilon: 1e-5 }) };
    },
  },
  {
    name: 'LayerNormalization axis -2',
    build: (g, dt) => {
      const x = rand(g, 'x', dt, [2, 3, 4], 1, -2, 2); const s = rand(g, 's', dt, [3, 4], 2, 0.5, 1.5);
      return { wrt: [x, s], y: O.layerNorm(x.v, s.v, undefined, { axis: -2 }) };
    },
  },
  {
    name: 'RMSNorm',
    build: (g, dt) => {
      const x = rand(g, 'x', dt, [2, 3, 6], 1, -2, 2); const s = rand(g, 's', dt, [6], 2, 0.5, 1.5);
      return { wrt: [x, s], y: O.rmsNorm(x.v, s.v, 1e-6) };
    },
  },
  {
    name: 'Gather (embedding, repeated ids)',
    build: (g, dt) => {
      const w = rand(g, 'w', dt, [5, 3], 1);
      return { wrt: [w], y: O.gather(w.v, idx(g, [2, 3], [0, 4, 2, 4, 4, 1])) };
    },
  },
  {
    name: 'Gather along axis 1 (positions)',
    build: (g, dt) => {
      const h = rand(g, 'h', dt, [2, 4, 3], 1);
      return { wrt: [h], y: O.gather(h.v, idx(g, [3], [3, 0, 3]), 1) };
    },
  },
  {
    name: 'Gather along axis 2 with a scalar index',
    build: (g, dt) => {
      const h = rand(g, 'h', dt, [2, 3, 4], 1);
      return { wrt: [h], y: O.mul(O.gather(h.v, idx(g, [], [2]), 2), O.gather(h.v, idx(g, [2, 1], [1, 2]), 2)) };
    },
  },
  {
    name: 'GatherElements (token log-probs)',
    build: (g, dt) => {
      const x = rand(g, 'x', dt, [2, 3, 5], 1, -2, 2);
      const ids = idx(g, [2, 3, 1], [0, 4, 2, 4, 4, 1]);
      return { wrt: [x], y: O.gatherElements(O.logSoftmax(x.v, -1), ids, -1) };
    },
  },
  binary('MatMul batched × 2-D weight', O.matmul, [2, 3, 4], [4, 5]),
  binary('MatMul batched × batched', O.matmul, [2, 3, 4], [2, 4, 5]),
  binary('MatMul batch broadcast', O.matmul, [2, 1, 3, 4], [3, 4, 2]),
  binary('FusedMatMul transB α=0.5', (a, b) => O.matmul(a, b, { transB: true, alpha: 0.5 }), [2, 3, 4], [5, 4]),
  binary('FusedMatMul transA', (a, b) => O.matmul(a, b, { transA: true }), [2, 4, 3], [2, 4, 5]),
  binary('FusedMatMul transA transB α=2', (a, b) => O.matmul(a, b, { transA: true, transB: true, alpha: 2 }), [4, 3], [5, 4]),
  {
    name: 'Gemm transA transB α β, C broadcast',
    build: (g, dt) => {
      const a = rand(g, 'a', dt, [4, 3], 1); const b = rand(g, 'b', dt, [5, 4], 2); const c = rand(g, 'c', dt, [5], 3);
      return { wrt: [a, b, c], y: O.gemm(a.v, b.v, c.v, { transA: true, transB: true, alpha: 0.7, beta: 1.3 }) };
    },
  },
  {
    name: 'RoPE with Cos/Sin constants',
    build: (g, dt) => {
      const x = rand(g, 'x', dt, [2, 3, 4], 1);
      const ang = randomTensor(dt, [3, 2], 7, 0, 3);
      const a = constant(g, ang);
      const cos = O.concat([O.cos(a), O.cos(a)], -1);
      const sin = O.concat([O.sin(a), O.sin(a)], -1);
      const [x1, x2] = O.split(x.v, [2, 2], -1);
      const rot = O.concat([O.neg(x2!), x1!], -1);
      return { wrt: [x], y: O.add(O.mul(x.v, cos), O.mul(rot, sin)) };
    },
  },
  {
    name: 'Causal attention scores (mask + softmax)',
    build: (g, dt) => {
      const q = rand(g, 'q', dt, [2, 4, 3], 1); const k = rand(g, 'k', dt, [2, 4, 3], 2);
      const s = O.matmul(q.v, k.v, { transB: true, alpha: 1 / Math.sqrt(3) });
      return { wrt: [q, k], y: O.softmax(O.where(O.causalMask(s), s, -1e9), -1) };
    },
  },
  {
    name: 'Causal attention scores (additive bias, symbolic seq)',
    sizes: { b: 2, s: 4 },
    build: (g, dt) => {
      const q = rand(g, 'q', dt, ['b', 's', 3], 1, -1, 1, { b: 2, s: 4 }); const k = rand(g, 'k', dt, ['b', 's', 3], 2, -1, 1, { b: 2, s: 4 });
      const s = O.matmul(q.v, k.v, { transB: true });
      return { wrt: [q, k], y: O.softmax(O.add(s, O.causalBias(s)), -1) };
    },
  },
  {
    name: 'integration: pre-norm block, causal attention, GELU MLP, LoRA on q and o (frozen base)',
    build: (g, dt) => {
      const [B, S, D, H, F, R] = [2, 3, 4, 2, 8, 2];
      let seed = 50;
      const w = (dims: number[]): Value => constant(g, randomTensor(dt, dims, seed++, -0.5, 0.5));
      const x = input(g, 'x', dt, [B, S, D]);
      const qa = rand(g, 'qa', dt, [D, R], 1); const qb = rand(g, 'qb', dt, [R, D], 2);
      const oa = rand(g, 'oa', dt, [D, R], 3); const ob = rand(g, 'ob', dt, [R, D], 4);
      const ln = rand(g, 'ln', dt, [D], 5, 0.5, 1.5);
      const heads = (v: Value): Value => O.transpose(O.reshape(v, [B, S, H, D / H]), [0, 2, 1, 3]);
      const h = O.layerNorm(x, ln.v, w([D]));
      const q = heads(O.add(O.matmul(h, w([D, D])), O.matmul(O.mul(O.matmul(h, qa.v), 2), qb.v)));
      const k = heads(O.matmul(h, w([D, D])));
      const v = heads(O.matmul(h, w([D, D])));
      const sc = O.matmul(q, k, { transB: true, alpha: 1 / Math.sqrt(D / H) });
      const ctx = O.reshape(O.transpose(O.matmul(O.softmax(O.add(sc, O.causalBias(sc)), -1), v), [0, 2, 1, 3]), [B, S, D]);
      const x2 = O.add(x, O.add(O.matmul(ctx, w([D, D])), O.matmul(O.matmul(ctx, oa.v), ob.v)));
      const mlp = O.matmul(O.gelu(O.add(O.matmul(O.rmsNorm(x2, w([D])), w([D, F])), w([F])), 'tanh'), w([F, D]));
      return { wrt: [qa, qb, oa, ob, ln], feeds: { x: randomTensor(dt, [B, S, D], 60) }, y: O.add(x2, mlp) };
    },
  },
  // Symbolic dims: decided by name at build time.
  {
    name: 'symbolic: [b,s,4] * [s,1] and ReduceMean over b',
    sizes: { b: 2, s: 3 },
    build: (g, dt) => {
      const x = rand(g, 'x', dt, ['b', 's', 4], 1, -1, 1, { b: 2, s: 3 });
      const w = rand(g, 'w', dt, ['s', 1], 2, -1, 1, { s: 3 });
      return { wrt: [x, w], y: O.reduceMean(O.mul(x.v, w.v), [0], false) };
    },
  },
  // Symbolic dims that differ by name: un-broadcast falls back to run-time Shape ops (m is 1 at run time).
  {
    name: 'symbolic: run-time un-broadcast [n,4] + [m,4], m=1',
    yDims: [3, 4],
    build: (g, dt) => {
      const a = rand(g, 'a', dt, ['n', 4], 1, -1, 1, { n: 3 });
      const b = rand(g, 'b', dt, ['m', 4], 2, -1, 1, { m: 1 });
      return { wrt: [a, b], y: O.mul(O.add(a.v, b.v), O.add(a.v, b.v)) };
    },
  },
  {
    name: 'symbolic: Slice, Concat and Reshape with run-time extents',
    yDims: [2, 6],
    build: (g, dt) => {
      const a = rand(g, 'a', dt, ['n', 5], 1, -1, 1, { n: 2 });
      const b = rand(g, 'b', dt, ['n', 'k'], 2, -1, 1, { n: 2, k: 3 });
      const cat = O.concat([O.slice(a.v, [1], [-1], [1]), b.v], 1); // [n, 3 + k]
      const y = O.slice(O.concat([cat, cat], 0), [0, -8], [2, 2 ** 62], [0, 1]);
      return { wrt: [a, b], y: O.reshape(O.mul(y, y), [2, -1]) };
    },
  },
];

const f32Cases: Case[] = [
  unary('Erf (float32)', O.erf, -2, 2, [3, 4], 'float32'),
  {
    name: 'LayerNormalization with saved statistics (float32)',
    dtype: 'float32',
    build: (g, dt) => {
      const x = rand(g, 'x', dt, [2, 3, 5], 1, -2, 2); const s = rand(g, 's', dt, [5], 2, 0.5, 1.5); const b = rand(g, 'b', dt, [5], 3);
      return { wrt: [x, s, b], y: O.layerNorm(x.v, s.v, b.v) };
    },
  },
  unary('Gelu erf form (float32)', (x) => O.gelu(x, 'none'), -3, 3, [3, 4], 'float32'),
];

t.test('VJP rules match central finite differences (float64, rel ≤ 1e-6)', async (t) => {
  for (const c of cases) {
    const r = await gradcheck(c);
    t.ok(r.fdNorm > 1e-3, `${c.name}: gradient is not trivially zero (‖fd‖=${r.fdNorm.toExponential(2)})`);
    t.ok(r.relError <= (r.dtype === 'float64' ? F64_TOL : F32_VS_F64_TOL), `${c.name}: rel error ${r.relError.toExponential(2)} over ${r.elements} elements (${r.dtype})`);
    onDevice(t, r);
  }
});

t.test('Erf, erf-GELU and LayerNormalization statistics in float32 (rel ≤ 5e-3)', async (t) => {
  for (const c of f32Cases) {
    const r = await gradcheck(c);
    t.ok(r.relError <= F32_TOL, `${c.name}: rel error ${r.relError.toExponential(4)} over ${r.elements} elements, ‖fd‖ ${r.fdNorm.toFixed(4)}`);
    onDevice(t, r);
  }
});

t.test('stopGradient blocks the gradient: d/dx [x · sg(x)] = x', async (t) => {
  const g = graph('stop');
  const x = param(g, 'x', 'float64', [4]);
  const loss = output(O.sumAll(O.mul(x, O.stopGradient(x))), 'loss');
  output(grad(loss, [x])[0]!, 'dx');
  const s = await createSession(toOnnx(g).bytes);
  const out = await run(s, { x: f64([4], [1, -2, 3, 0.5]) });
  t.same(numbers(out['dx']!), [1, -2, 3, 0.5]);
});

t.test('only the paths to requested parameters are built: a frozen weight gets no gradient product', async (t) => {
  const g = graph('paths');
  const x = input(g, 'x', 'float32', [8, 4]);
  const w = constant(g, randomTensor('float32', [4, 4], 1));
  const a = param(g, 'a', 'float32', [4, 2]);
  const h = O.add(O.matmul(x, w), O.matmul(O.matmul(x, a), constant(g, randomTensor('float32', [2, 4], 2))));
  const before = g.nodes.length;
  grad(O.sumAll(O.mul(h, h)), [a]);
  const backward = g.nodes.slice(before);
  const products = backward.filter((n) => n.op === 'MatMul' || n.op === 'FusedMatMul');
  // dA = xᵀ·(dh·Bᵀ): two products; nothing for x·W (W frozen, x data).
  t.equal(products.length, 2);
});

t.test('a missing rule names the op and what to do', async (t) => {
  const g = graph('norule');
  const x = param(g, 'x', 'float32', [3]);
  const y = emit(g, 'Softsign', [x], {}, [{ dtype: 'float32', shape: [3] }])[0]!;
  t.throws(() => grad(O.sumAll(y), [x]), /no gradient rule for op Softsign.*stopGradient/);
});
