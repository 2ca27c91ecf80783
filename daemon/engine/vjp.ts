/**
 * The one registry of vector-Jacobian product rules, keyed by ONNX op type.
 *
 * A rule gets the node's inputs x, outputs y, the incoming output gradients dy, and `needs[i]`
 * (whether input i's gradient is wanted: frozen weights and data are not), and returns the
 * gradient for each input (undefined = none). Each formula is the op's textbook derivative (one
 * line per input, as in PyTorch's tools/autograd/derivatives.yaml) and is checked against float64
 * finite differences in test/engine/vjp.test.ts; broadcasting is undone by unbroadcast(). Only
 * standard ONNX ops are emitted, plus com.microsoft.FusedMatMul for transposed products.
 */
import { AligndError } from '../base/errors.js';
import { type Attr, type Node, type Value, constData, constant, emit, withShape } from './graph.js';
import { sizeOf, tensor } from './tensor.js';
import {
  add, and, cast, concat, constantOfShape, cos, div, equal, erf, exp, expand, greater, greaterOrEqual, ints,
  lessOrEqual, log, matmul, mul, neg, nonZero, normAxis, not, pad, pow, reduceMean, reduceSum, reshape,
  scatterElements, scatterND, shapeOf, shapeValue, sigmoid, sign, sin, split, sqrt, squeeze, sub, transpose,
  unsqueeze, where, zerosLike,
} from './ops.js';

export interface VjpContext {
  node: Node;
  x: (Value | undefined)[];
  y: Value[];
  dy: (Value | undefined)[];
  needs: boolean[];
}

export type Rule = (c: VjpContext) => (Value | undefined)[];

// ---------------------------------------------------------------- helpers

const intAttr = (n: Node, k: string, dflt: number): number => {
  const a: Attr | undefined = n.attrs[k];
  return a?.type === 'int' ? a.v : dflt;
};
const floatAttr = (n: Node, k: string, dflt: number): number => {
  const a: Attr | undefined = n.attrs[k];
  return a?.type === 'float' ? a.v : dflt;
};

function fail(n: Node, why: string, action: string): never {
  throw new AligndError('ENGINE_INVALID_GRAPH', `cannot differentiate ${n.op} node '${n.name}': ${why}`, { input: n.name, action });
}

/** Integer data of a constant input (axes, shapes, slice bounds). */
function constInts(n: Node, v: Value | undefined, what: string): number[] | undefined {
  if (v === undefined) return undefined;
  const c = constData(v);
  if (c === undefined) fail(n, `its ${what} input is not a builder constant`, `pass ${what} as numbers to the op helper`);
  return Array.from(c.data as BigInt64Array, Number);
}

const d0 = (c: VjpContext): Value => c.dy[0]!;
const x0 = (c: VjpContext): Value => c.x[0]!;
const only = (c: VjpContext, i: number, f: () => Value | undefined): Value | undefined => (c.needs[i] ? f() : undefined);

/** Reshape d back to x's shape (static when x's dims are numbers, else Shape(x) at run time). */
function reshapeLike(d: Value, x: Value): Value {
  return withShape(reshape(d, shapeValue(x)), x.shape);
}

/**
 * Undo numpy broadcasting: sum d over the axes where x had size 1 or no axis, then shape it as x.
 * Decided at build time by dim equality; otherwise at run time from Shape(x) and Shape(d).
 */
export function unbroadcast(d: Value, x: Value): Value {
  const xs = x.shape;
  const ds = d.shape;
  if (xs !== undefined && ds !== undefined && ds.length >= xs.length) {
    const lead = ds.length - xs.length;
    const axes: number[] = [];
    let decided = true;
    for (let i = 0; i < ds.length && decided; i++) {
      if (i < lead) axes.push(i);
      else if (xs[i - lead] === ds[i]) continue;
      else if (xs[i - lead] === 1) axes.push(i);
      else decided = false;
    }
    if (decided) {
      if (axes.length === 0) return d;
      let r = reduceSum(d, axes, true);
      if (lead > 0) r = squeeze(r, [...Array(lead).keys()]);
      return withShape(r, xs);
    }
  }
  // Run time: axes where Shape(x), left-padded with ones, differs from Shape(d).
  const g = d.g;
  let sx = shapeOf(x);
  const sd = shapeOf(d);
  if (xs !== undefined && ds !== undefined && ds.length > xs.length) sx = concat([ints(g, new Array(ds.length - xs.length).fill(1)), sx], 0);
  const axes = reshape(nonZero(not(equal(sx, sd))), [-1]);
  const r = emit(g, 'ReduceSum', [d, axes], { keepdims: { type: 'int', v: 1 }, noop_with_empty_axes: { type: 'int', v: 1 } },
    [{ dtype: d.dtype, shape: undefined }])[0]!;
  return withShape(reshape(r, shapeOf(x)), xs);
}

/** [..., K] → [rows, K]: folds batch axes into rows so a weight gradient is one GEMM. */
function foldRows(v: Value): Value {
  const k = v.shape?.[v.shape.length - 1];
  if (typeof k === 'number') return reshape(v, [-1, k]);
  return reshape(v, concat([ints(v.g, [-1]), shapeOf(v, -1)], 0));
}

interface Product { transA: boolean; transB: boolean; alpha: number }

/**
 * Gradients of Y = α·op(A)·op(B) (MatMul, FusedMatMul, Gemm). A 2-D B against a batched A (a
 * weight) has its gradient computed as one GEMM over folded rows.
 */
function productGrads(c: VjpContext, p: Product): [Value | undefined, Value | undefined] {
  const a = c.x[0]!;
  const b = c.x[1]!;
  const d = d0(c);
  const ra = a.shape?.length ?? 0;
  const rb = b.shape?.length ?? 0;
  if (ra < 2 || rb < 2) fail(c.node, 'operands of rank < 2', 'reshape 1-D operands to 2-D before the product');
  const al = p.alpha;
  let da: Value | undefined;
  let db: Value | undefined;
  if (c.needs[0]) {
    if (!p.transA) da = matmul(d, b, { transB: !p.transB, alpha: al });
    else da = matmul(b, d, { transA: p.transB, transB: true, alpha: al });
    da = unbroadcast(da, a);
  }
  if (c.needs[1]) {
    const fold = rb === 2 && ra > 2 && !p.transA;
    const af = fold ? foldRows(a) : a;
    const df = fold ? foldRows(d) : d;
    if (!p.transB) db = matmul(af, df, { transA: !p.transA, alpha: al });
    else db = matmul(df, af, { transA: true, transB: p.transA, alpha: al });
    db = fold ? withShape(db, b.shape) : unbroadcast(db, b);
  }
  return [da, db];
}

/** Reduction axes of a ReduceX node (all axes when none are given). */
function reduceAxes(c: VjpContext): number[] {
  const x = x0(c);
  const r = x.shape?.length ?? fail(c.node, 'input rank unknown', 'declare input shapes');
  const given = constInts(c.node, c.x[1], 'axes');
  return given === undefined || given.length === 0 ? [...Array(r).keys()] : given.map((a) => normAxis(a, r));
}

/** d (reduced over axes) broadcast back to x's shape. */
function unreduce(c: VjpContext, d: Value, axes: number[]): Value {
  const x = x0(c);
  const kept = intAttr(c.node, 'keepdims', 1) === 1 ? d : unsqueeze(d, axes);
  return withShape(expand(kept, shapeValue(x)), x.shape);
}

function elementCount(x: Value, axes: number[]): Value | number {
  const dims = axes.map((a) => x.shape![a]!);
  if (dims.every((v) => typeof v === 'number')) return (dims as number[]).reduce((p, q) => p * q, 1);
  const g = x.g;
  const sizes = emit(g, 'Gather', [shapeOf(x), ints(g, axes)], { axis: { type: 'int', v: 0 } }, [{ dtype: 'int64', shape: [axes.length] }])[0]!;
  const prod = emit(g, 'ReduceProd', [sizes], { keepdims: { type: 'int', v: 0 } }, [{ dtype: 'int64', shape: [] }])[0]!;
  return cast(prod, x.dtype);
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const GELU_C = 0.044715; // Hendrycks & Gimpel 2016, tanh approximation

// ---------------------------------------------------------------- the registry

const same = (c: VjpContext): (Value | undefined)[] => [d0(c)];

export const vjp: Record<string, Rule> = {
  Identity: same,
  Add: (c) => [only(c, 0, () => unbroadcast(d0(c), c.x[0]!)), only(c, 1, () => unbroadcast(d0(c), c.x[1]!))],
  Sub: (c) => [only(c, 0, () => unbroadcast(d0(c), c.x[0]!)), only(c, 1, () => unbroadcast(neg(d0(c)), c.x[1]!))],
  Mul: (c) => {
    const [a, b] = [c.x[0]!, c.x[1]!];
    if (a.name === b.name) return [mul(d0(c), mul(a, 2)), undefined]; // x·x: one pass instead of two and a sum
    return [only(c, 0, () => unbroadcast(mul(d0(c), b), a)), only(c, 1, () => unbroadcast(mul(d0(c), a), b))];
  },
  Div: (c) => [
    only(c, 0, () => unbroadcast(div(d0(c), c.x[1]!), c.x[0]!)),
    only(c, 1, () => unbroadcast(neg(mul(d0(c), div(c.y[0]!, c.x[1]!))), c.x[1]!)),
  ],
  Sum: (c) => c.x.map((x, i) => only(c, i, () => unbroadcast(d0(c), x!))),
  Neg: (c) => [neg(d0(c))],
  // d(a^b)/da = b·a^(b−1); d/db = a^b·ln a.
  Pow: (c) => {
    const [a, b] = [c.x[0]!, c.x[1]!];
    const k = constData(b);
    const da = (): Value => {
      if (k !== undefined && k.data.length === 1) {
        const e = Number(k.data[0]);
        return unbroadcast(mul(d0(c), e === 2 ? mul(a, 2) : mul(pow(a, e - 1), e)), a);
      }
      return unbroadcast(mul(d0(c), mul(b, pow(a, sub(b, 1)))), a);
    };
    return [only(c, 0, da), only(c, 1, () => unbroadcast(mul(d0(c), mul(c.y[0]!, log(a))), b))];
  },
  Sqrt: (c) => [div(mul(d0(c), 0.5), c.y[0]!)],
  Reciprocal: (c) => [neg(mul(d0(c), mul(c.y[0]!, c.y[0]!)))],
  Exp: (c) => [mul(d0(c), c.y[0]!)],
  Log: (c) => [div(d0(c), x0(c))],
  Sigmoid: (c) => [mul(d0(c), mul(c.y[0]!, sub(1, c.y[0]!)))],
  Tanh: (c) => [mul(d0(c), sub(1, mul(c.y[0]!, c.y[0]!)))],
  Relu: (c) => [where(greater(x0(c), 0), d0(c), 0)],
  // erf'(x) = 2/√π·exp(−x²)
  Erf: (c) => [mul(d0(c), mul(exp(neg(mul(x0(c), x0(c)))), 2 / Math.sqrt(Math.PI)))],
  Abs: (c) => [mul(d0(c), sign(x0(c)))],
  Sign: () => [undefined],
  Cos: (c) => [neg(mul(d0(c), sin(x0(c))))],
  Sin: (c) => [mul(d0(c), cos(x0(c)))],
  Gelu: (c) => {
    const x = x0(c);
    if (c.node.attrs['approximate']?.v === 'tanh') {
      // ½(1+tanh u) = σ(2u), so y = x·σ(z) with z = 2u = x(a + b·x²), a = 2√(2/π), b = a·c:
      // y' = s + x·s(1−s)·z',  z' = a + 3b·x²,  s = σ(z). Written to keep the number of full-size passes low.
      const a = 2 * SQRT_2_OVER_PI;
      const b = a * GELU_C;
      const x2 = mul(x, x);
      const s = sigmoid(mul(x, add(mul(x2, b), a)));
      const q = mul(x, add(mul(x2, 3 * b), a));
      return [mul(d0(c), mul(s, add(mul(sub(1, s), q), 1)))];
    }
    // y = x·Φ(x): y' = Φ(x) + x·φ(x), φ(x) = exp(−x²/2)/√(2π)
    const cdf = mul(add(erf(mul(x, Math.SQRT1_2)), 1), 0.5);
    const pdf = mul(exp(mul(mul(x, x), -0.5)), 1 / Math.sqrt(2 * Math.PI));
    return [mul(d0(c), add(cdf, mul(x, pdf)))];
  },
  Max: (c) => {
    const m = greaterOrEqual(c.x[0]!, c.x[1]!);
    return [only(c, 0, () => unbroadcast(where(m, d0(c), 0), c.x[0]!)), only(c, 1, () => unbroadcast(where(m, 0, d0(c)), c.x[1]!))];
  },
  Min: (c) => {
    const m = lessOrEqual(c.x[0]!, c.x[1]!);
    return [only(c, 0, () => unbroadcast(where(m, d0(c), 0), c.x[0]!)), only(c, 1, () => unbroadcast(where(m, 0, d0(c)), c.x[1]!))];
  },
  Clip: (c) => {
    const [x, lo, hi] = c.x;
    let inside: Value | undefined;
    if (lo !== undefined) inside = greaterOrEqual(x!, lo);
    if (hi !== undefined) inside = inside === undefined ? lessOrEqual(x!, hi) : and(inside, lessOrEqual(x!, hi));
    return [inside === undefined ? d0(c) : where(inside, d0(c), 0)];
  },
  Where: (c) => {
    const [cond, a, b] = c.x;
    return [undefined, only(c, 1, () => unbroadcast(where(cond!, d0(c), 0), a!)), only(c, 2, () => unbroadcast(where(cond!, 0, d0(c)), b!))];
  },
  Cast: (c) => [cast(d0(c), x0(c).dtype)],

  MatMul: (c) => productGrads(c, { transA: false, transB: false, alpha: 1 }),
  FusedMatMul: (c) => productGrads(c, {
    transA: intAttr(c.node, 'transA', 0) === 1, transB: intAttr(c.node, 'transB', 0) === 1, alpha: floatAttr(c.node, 'alpha', 1),
  }),
  Gemm: (c) => {
    const [da, db] = productGrads(c, {
      transA: intAttr(c.node, 'transA', 0) === 1, transB: intAttr(c.node, 'transB', 0) === 1, alpha: floatAttr(c.node, 'alpha', 1),
    });
    const beta = floatAttr(c.node, 'beta', 1);
    return [da, db, only(c, 2, () => unbroadcast(beta === 1 ? d0(c) : mul(d0(c), beta), c.x[2]!))];
  },

  ReduceSum: (c) => [unreduce(c, d0(c), reduceAxes(c)), undefined],
  ReduceMean: (c) => {
    const axes = reduceAxes(c);
    return [unreduce(c, div(d0(c), elementCount(x0(c), axes)), axes), undefined];
  },
  // Ties share the gradient equally.
  ReduceMax: (c) => {
    const axes = reduceAxes(c);
    const x = x0(c);
    const keep = intAttr(c.node, 'keepdims', 1) === 1;
    const y = keep ? c.y[0]! : unsqueeze(c.y[0]!, axes);
    const mask = cast(equal(x, y), x.dtype);
    const share = div(keep ? d0(c) : unsqueeze(d0(c), axes), reduceSum(mask, axes, true));
    return [mul(mask, share), undefined];
  },
  // dx = y ⊙ (dy − Σ dy ⊙ y)
  Softmax: (c) => {
    const y = c.y[0]!;
    const axis = intAttr(c.node, 'axis', -1);
    return [mul(y, sub(d0(c), reduceSum(mul(d0(c), y), [axis], true)))];
  },
  // dx = dy − exp(y) ⊙ Σ dy
  LogSoftmax: (c) => {
    const axis = intAttr(c.node, 'axis', -1);
    return [sub(d0(c), mul(exp(c.y[0]!), reduceSum(d0(c), [axis], true)))];
  },
  // x̂ = (x−μ)·r, r = 1/√(var+ε), g = dy⊙γ: dx = r⊙(g − mean(g) − x̂⊙mean(g⊙x̂)); dγ = Σ dy⊙x̂; dβ = Σ dy.
  // float32 takes x̂ and r from one LayerNormalization node; float64 recomputes them from x.
  LayerNormalization: (c) => {
    const [x, gamma, beta] = c.x;
    const rank = x!.shape?.length ?? fail(c.node, 'input rank unknown', 'declare input shapes');
    const axis = normAxis(intAttr(c.node, 'axis', -1), rank);
    const axes = [...Array(rank - axis).keys()].map((i) => i + axis);
    const eps = floatAttr(c.node, 'epsilon', 1e-5);
    let xhat: Value;
    let r: Value;
    if (x!.dtype === 'float32') {
      // One fused pass: x̂ and 1/σ from LayerNormalization itself (unit scale, its InvStdDev output).
      const unit = gamma!.shape?.every((n) => typeof n === 'number')
        ? constant(x!.g, tensor('float32', gamma!.shape as number[], new Float32Array(sizeOf(gamma!.shape as number[])).fill(1)))
        : constantOfShape(shapeOf(gamma!), 'float32', 1);
      const statShape = x!.shape!.map((n, i) => (i < axis ? n : 1));
      [xhat, , r] = emit(x!.g, 'LayerNormalization', [x!, unit], { axis: c.node.attrs['axis'] ?? { type: 'int', v: -1 }, epsilon: { type: 'float', v: eps } },
        [{ dtype: 'float32', shape: x!.shape }, { dtype: 'float32', shape: statShape }, { dtype: 'float32', shape: statShape }]) as [Value, Value, Value];
    } else {
      // Recomputed in the graph (float64 has no saved-statistics kernel on the CPU provider).
      const xc = sub(x!, reduceMean(x!, axes));
      r = div(1, sqrt(add(reduceMean(mul(xc, xc), axes), eps)));
      xhat = mul(xc, r);
    }
    const d = d0(c);
    const dx = only(c, 0, () => {
      const gd = mul(d, gamma!);
      return mul(r, sub(sub(gd, reduceMean(gd, axes)), mul(xhat, reduceMean(mul(gd, xhat), axes))));
    });
    return [dx, only(c, 1, () => unbroadcast(mul(d, xhat), gamma!)), only(c, 2, () => unbroadcast(d, beta!))];
  },

  // Embedding lookup: dW = ScatterND(0, idx[..., None], dy, add). Another axis a is moved to the
  // front first (data and the index block of dy), scattered, and moved back.
  Gather: (c) => {
    const [data, idx] = c.x;
    return [only(c, 0, () => {
      const r = data!.shape?.length ?? fail(c.node, 'data rank unknown', 'declare input shapes');
      const k = idx!.shape?.length ?? fail(c.node, 'indices rank unknown', 'declare input shapes');
      const a = normAxis(intAttr(c.node, 'axis', 0), r);
      const at = unsqueeze(idx!, [-1]);
      if (a === 0) return scatterND(zerosLike(data!), at, d0(c), 'add');
      const permData = [a, ...[...Array(r).keys()].filter((i) => i !== a)];
      const permDy = [...[...Array(k).keys()].map((i) => a + i), ...[...Array(a).keys()], ...[...Array(r - 1 - a).keys()].map((i) => a + k + i)];
      const inv = permData.map((_, i) => permData.indexOf(i));
      const dims = permData.map((i) => data!.shape![i]!);
      const shape = dims.every((n) => typeof n === 'number') ? ints(data!.g, dims as number[])
        : emit(data!.g, 'Gather', [shapeOf(data!), ints(data!.g, permData)], { axis: { type: 'int', v: 0 } }, [{ dtype: 'int64', shape: [r] }])[0]!;
      const zeros = withShape(constantOfShape(shape, data!.dtype, 0), dims);
      return withShape(transpose(scatterND(zeros, at, transpose(d0(c), permDy), 'add'), inv), data!.shape);
    }), undefined];
  },
  GatherElements: (c) => {
    const [data, idx] = c.x;
    return [only(c, 0, () => scatterElements(zerosLike(data!), idx!, d0(c), intAttr(c.node, 'axis', 0), 'add')), undefined];
  },

  Reshape: (c) => [reshapeLike(d0(c), x0(c)), undefined],
  Squeeze: (c) => [reshapeLike(d0(c), x0(c)), undefined],
  Unsqueeze: (c) => [reshapeLike(d0(c), x0(c)), undefined],
  Flatten: (c) => [reshapeLike(d0(c), x0(c))],
  Expand: (c) => [unbroadcast(d0(c), x0(c)), undefined],
  Transpose: (c) => {
    const p = c.node.attrs['perm'];
    const rank = x0(c).shape?.length ?? fail(c.node, 'input rank unknown', 'declare input shapes');
    const perm = p?.type === 'ints' ? p.v : [...Array(rank).keys()].reverse();
    const inv = new Array<number>(perm.length);
    perm.forEach((q, i) => { inv[q] = i; });
    return [transpose(d0(c), inv)];
  },
  Concat: (c) => {
    const xs = c.x as Value[];
    const rank = xs[0]!.shape?.length ?? fail(c.node, 'input rank unknown', 'declare input shapes');
    const axis = normAxis(intAttr(c.node, 'axis', 0), rank);
    const sizes = xs.map((x) => x.shape![axis]!);
    if (sizes.every((s) => typeof s === 'number')) return split(d0(c), sizes as number[], axis).map((p, i) => (c.needs[i] ? p : undefined));
    const runtime = concat(xs.map((x) => shapeOf(x, axis, axis + 1)), 0);
    const outs = emit(d0(c).g, 'Split', [d0(c), runtime], { axis: { type: 'int', v: axis } }, xs.map((x) => ({ dtype: x.dtype, shape: x.shape })));
    return outs.map((p, i) => (c.needs[i] ? p : undefined));
  },
  Split: (c) => {
    const axis = intAttr(c.node, 'axis', 0);
    return [concat(c.y.map((y, i) => c.dy[i] ?? zerosLike(y)), axis), undefined];
  },
  // The gradient of a slice is the incoming gradient padded with zeros back to the input's extent.
  Slice: (c) => {
    const x = x0(c);
    const rank = x.shape?.length ?? fail(c.node, 'input rank unknown', 'declare input shapes');
    const starts = constInts(c.node, c.x[1], 'starts')!;
    const ends = constInts(c.node, c.x[2], 'ends')!;
    const axes = (constInts(c.node, c.x[3], 'axes') ?? starts.map((_, i) => i)).map((a) => normAxis(a, rank));
    const steps = constInts(c.node, c.x[4], 'steps') ?? starts.map(() => 1);
    if (steps.some((s) => s !== 1)) fail(c.node, 'steps other than 1', 'slice with step 1');
    const g = x.g;
    const before: (number | Value)[] = new Array(rank).fill(0);
    const after: (number | Value)[] = new Array(rank).fill(0);
    axes.forEach((a, i) => {
      const n = x.shape![a]!;
      const s = starts[i]!;
      const e = ends[i]!;
      if (typeof n === 'number') {
        const cl = (v: number): number => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
        before[a] = cl(s);
        after[a] = n - Math.max(cl(e), cl(s));
      } else {
        // Symbolic extent: clamp at run time. n = Shape(x)[a]
        const nv = shapeOf(x, a, a + 1);
        const clampRt = (v: number): Value => {
          const raw = v < 0 ? add(nv, v) : ints(g, [Math.min(v, 2 ** 62)]);
          return emit(g, 'Min', [emit(g, 'Max', [raw, ints(g, [0])], {}, [{ dtype: 'int64', shape: [1] }])[0]!, nv], {}, [{ dtype: 'int64', shape: [1] }])[0]!;
        };
        const sv = clampRt(s);
        before[a] = sv;
        after[a] = sub(nv, emit(g, 'Max', [clampRt(e), sv], {}, [{ dtype: 'int64', shape: [1] }])[0]!);
      }
    });
    const all = [...before, ...after];
    const pads = all.every((v) => typeof v === 'number') ? ints(g, all as number[])
      : concat(all.map((v) => (typeof v === 'number' ? ints(g, [v]) : v)), 0);
    return [withShape(pad(d0(c), pads), x.shape), undefined, undefined, undefined, undefined];
  },
};

/** Ops whose outputs carry no gradient (shape queries, comparisons, index construction). */
export const nonDifferentiable = new Set([
  'Shape', 'Size', 'ConstantOfShape', 'Range', 'Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'Not',
  'And', 'Or', 'NonZero', 'ArgMax', 'ArgMin', 'Trilu', 'Floor', 'Ceil', 'Round',
]);
