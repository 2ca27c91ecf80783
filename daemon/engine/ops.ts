/**
 * Op helpers: one plain function per ONNX op (opset 21), each inferring its output type and,
 * where cheap, its shape. Binary ops accept a number for either operand (a scalar constant of the
 * other operand's dtype). Composite helpers (rmsNorm, silu, softplus, logSigmoid, causalMask) are
 * built from these, so autodiff differentiates them through their parts.
 */
import { AligndError } from '../base/errors.js';
import {
  A, type Attr, type Dim, type Graph, type Shape, type Value, type ValueInfo, constData, constant, emit, unknownDim, withShape,
} from './graph.js';
import { type DType, isFloat, onnxType, tensor } from './tensor.js';

export type Operand = Value | number;

const MS = 'com.microsoft';

// ---------------------------------------------------------------- shapes

export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) {
    throw new AligndError('ENGINE_INVALID_GRAPH', `axis ${axis} is out of range for rank ${rank}`,
      { action: 'pass an axis within the tensor rank' });
  }
  return a;
}

export function sameDim(a: Dim, b: Dim): boolean {
  return a === b;
}

/** Numpy broadcasting of two shapes; symbolic dims are assumed ≠ 1 unless named equal. */
export function broadcastShape(g: Graph, a: Shape | undefined, b: Shape | undefined): Shape | undefined {
  if (a === undefined || b === undefined) return undefined;
  const n = Math.max(a.length, b.length);
  const out: Shape = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (sameDim(da, db)) out.push(da);
    else if (da === 1) out.push(db);
    else if (db === 1) out.push(da);
    else if (typeof da === 'number' && typeof db === 'number') {
      throw new AligndError('ENGINE_INVALID_GRAPH', `shapes [${a}] and [${b}] do not broadcast`,
        { action: 'check the operands of this elementwise op' });
    } else if (typeof da === 'number') out.push(da);
    else if (typeof db === 'number') out.push(db);
    else out.push(unknownDim(g));
  }
  return out;
}

export const rankOf = (v: Value): number | undefined => v.shape?.length;

function need(v: Value, what: string): Shape {
  if (v.shape === undefined) {
    throw new AligndError('ENGINE_INVALID_GRAPH', `${what}: the rank of '${v.name}' is unknown`,
      { action: 'declare inputs with full shapes (symbolic names allowed) so ranks are known' });
  }
  return v.shape;
}

const info = (dtype: DType, shape: Shape | undefined): ValueInfo => ({ dtype, shape });

// ---------------------------------------------------------------- constants

/** A 1-D int64 constant (axes, shapes, pads). */
export function ints(g: Graph, values: number[]): Value {
  return constant(g, tensor('int64', [values.length], values));
}

/** A scalar constant of dtype. */
export function scalar(g: Graph, dtype: DType, v: number): Value {
  return constant(g, tensor(dtype, [], [v]));
}

function lift(ref: Value, x: Operand): Value {
  return typeof x === 'number' ? scalar(ref.g, ref.dtype, x) : x;
}

function pick(a: Operand, b: Operand, op: string): Value {
  if (typeof a !== 'number') return a;
  if (typeof b !== 'number') return b;
  throw new AligndError('ENGINE_INVALID_GRAPH', `${op} of two numbers`, { action: 'use at least one graph value' });
}

// ---------------------------------------------------------------- elementwise

function binary(op: string, a: Operand, b: Operand, outDtype?: DType): Value {
  const ref = pick(a, b, op);
  const x = lift(ref, a);
  const y = lift(ref, b);
  const g = ref.g;
  return emit(g, op, [x, y], {}, [info(outDtype ?? x.dtype, broadcastShape(g, x.shape, y.shape))])[0]!;
}

export const add = (a: Operand, b: Operand): Value => binary('Add', a, b);
export const sub = (a: Operand, b: Operand): Value => binary('Sub', a, b);
export const mul = (a: Operand, b: Operand): Value => binary('Mul', a, b);
export const div = (a: Operand, b: Operand): Value => binary('Div', a, b);
export const pow = (a: Operand, b: Operand): Value => binary('Pow', a, b);
export const max = (a: Operand, b: Operand): Value => binary('Max', a, b);
export const min = (a: Operand, b: Operand): Value => binary('Min', a, b);
export const equal = (a: Operand, b: Operand): Value => binary('Equal', a, b, 'bool');
export const less = (a: Operand, b: Operand): Value => binary('Less', a, b, 'bool');
export const lessOrEqual = (a: Operand, b: Operand): Value => binary('LessOrEqual', a, b, 'bool');
export const greater = (a: Operand, b: Operand): Value => binary('Greater', a, b, 'bool');
export const greaterOrEqual = (a: Operand, b: Operand): Value => binary('GreaterOrEqual', a, b, 'bool');
export const and = (a: Value, b: Value): Value => binary('And', a, b, 'bool');
export const or = (a: Value, b: Value): Value => binary('Or', a, b, 'bool');

function unary(op: string, x: Value, attrs: Record<string, Attr> = {}, domain = ''): Value {
  return emit(x.g, op, [x], attrs, [info(x.dtype, x.shape)], { domain })[0]!;
}

export const neg = (x: Value): Value => unary('Neg', x);
export const sqrt = (x: Value): Value => unary('Sqrt', x);
export const reciprocal = (x: Value): Value => unary('Reciprocal', x);
export const exp = (x: Value): Value => unary('Exp', x);
export const log = (x: Value): Value => unary('Log', x);
export const sigmoid = (x: Value): Value => unary('Sigmoid', x);
export const tanh = (x: Value): Value => unary('Tanh', x);
export const relu = (x: Value): Value => unary('Relu', x);
export const erf = (x: Value): Value => unary('Erf', x);
export const abs = (x: Value): Value => unary('Abs', x);
export const sign = (x: Value): Value => unary('Sign', x);
export const cos = (x: Value): Value => unary('Cos', x);
export const sin = (x: Value): Value => unary('Sin', x);
export const identity = (x: Value): Value => unary('Identity', x);
export const not = (x: Value): Value => unary('Not', x);

/** Gelu (opset 20): approximate 'none' is x·Φ(x) (erf form), 'tanh' the tanh approximation. */
export const gelu = (x: Value, approximate: 'none' | 'tanh' = 'none'): Value =>
  unary('Gelu', x, { approximate: A.s(approximate) });

/** The value itself, but autodiff treats it as a constant. */
export function stopGradient(x: Value): Value {
  return emit(x.g, 'Identity', [x], {}, [info(x.dtype, x.shape)], { stopGradient: true })[0]!;
}

export function cast(x: Value, to: DType): Value {
  if (x.dtype === to) return x;
  return emit(x.g, 'Cast', [x], { to: A.i(onnxType[to]) }, [info(to, x.shape)])[0]!;
}

/**
 * `x` itself, computed only once `dep` exists. onnxruntime may run a node as soon as its inputs
 * exist, so a Cast of a stored weight would run at the start of a program and its widened copy
 * live until its last use (every layer's at once). Reshape(x, shape(x) + 0·d), d a runtime value
 * of `dep`, ties x to dep; d is a symbolic dim of dep when it has one (a Shape op, no data read),
 * else a comparison of dep's first element, so onnxruntime's constant folding cannot remove the tie.
 */
export function after(x: Value, dep: Value): Value {
  const g = x.g;
  const dims = need(x, 'after');
  const sym = dep.shape?.findIndex((d) => typeof d === 'string') ?? -1;
  const tie = sym >= 0
    ? shapeOf(dep, sym, sym + 1)
    : cast(less(slice(reshape(dep, [-1]), [0], [1], [0]), 0), 'int64');
  const shape = add(shapeValue(x), mul(tie, 0));
  return emit(g, 'Reshape', [x, shape], {}, [info(x.dtype, [...dims])])[0]!;
}

/**
 * A stored (e.g. half-precision) weight widened to `to` once `dep` exists (see after()). Autodiff
 * emits it again beside each backward use, so the widened copy lives only around one product in
 * each direction; the weight itself stays in its stored type.
 */
export function castLate(w: Value, to: DType, dep: Value): Value {
  if (w.dtype === to) return w;
  return emit(w.g, 'Cast', [after(w, dep)], { to: A.i(onnxType[to]) }, [info(to, w.shape)], { recast: { weight: w.name, to } })[0]!;
}

export function where(cond: Value, a: Operand, b: Operand): Value {
  const ref = pick(a, b, 'Where');
  const x = lift(ref, a);
  const y = lift(ref, b);
  const g = cond.g;
  return emit(g, 'Where', [cond, x, y], {}, [info(ref.dtype, broadcastShape(g, cond.shape, broadcastShape(g, x.shape, y.shape)))])[0]!;
}

/** Clip(x, lo, hi) with scalar bounds (either may be omitted). */
export function clip(x: Value, lo?: number, hi?: number): Value {
  const g = x.g;
  const l = lo === undefined ? undefined : scalar(g, x.dtype, lo);
  const h = hi === undefined ? undefined : scalar(g, x.dtype, hi);
  return emit(g, 'Clip', [x, l, h], {}, [info(x.dtype, x.shape)])[0]!;
}

// ---------------------------------------------------------------- products

export interface MatMulOptions { transA?: boolean; transB?: boolean; alpha?: number }

function swapLast(s: Shape): Shape {
  const t = [...s];
  const n = t.length;
  [t[n - 2], t[n - 1]] = [t[n - 1]!, t[n - 2]!];
  return t;
}

export function matmulShape(g: Graph, a: Shape | undefined, b: Shape | undefined, o: MatMulOptions = {}): Shape | undefined {
  if (a === undefined || b === undefined || a.length < 2 || b.length < 2) return undefined;
  const sa = o.transA ? swapLast(a) : a;
  const sb = o.transB ? swapLast(b) : b;
  const batch = broadcastShape(g, sa.slice(0, -2), sb.slice(0, -2))!;
  return [...batch, sa[sa.length - 2]!, sb[sb.length - 1]!];
}

/**
 * A·B with numpy batching. With transA/transB/alpha it is com.microsoft.FusedMatMul (transposes the
 * last two axes without materialising them), which onnxruntime's CPU and CUDA providers run.
 */
export function matmul(a: Value, b: Value, o: MatMulOptions = {}): Value {
  const g = a.g;
  const shape = matmulShape(g, a.shape, b.shape, o);
  if (!o.transA && !o.transB && (o.alpha ?? 1) === 1) return emit(g, 'MatMul', [a, b], {}, [info(a.dtype, shape)])[0]!;
  const attrs: Record<string, Attr> = { transA: A.i(o.transA ? 1 : 0), transB: A.i(o.transB ? 1 : 0), alpha: A.f(o.alpha ?? 1) };
  return emit(g, 'FusedMatMul', [a, b], attrs, [info(a.dtype, shape)], { domain: MS })[0]!;
}

export interface GemmOptions { transA?: boolean; transB?: boolean; alpha?: number; beta?: number }

/** alpha·A'·B' + beta·C for 2-D A, B; C broadcasts to the result. */
export function gemm(a: Value, b: Value, c?: Value, o: GemmOptions = {}): Value {
  const g = a.g;
  const shape = matmulShape(g, a.shape, b.shape, o);
  const attrs: Record<string, Attr> = {
    alpha: A.f(o.alpha ?? 1), beta: A.f(o.beta ?? 1), transA: A.i(o.transA ? 1 : 0), transB: A.i(o.transB ? 1 : 0),
  };
  return emit(g, 'Gemm', [a, b, c], attrs, [info(a.dtype, shape)])[0]!;
}

// ---------------------------------------------------------------- reductions and normalisation

function reducedShape(x: Value, axes: number[], keepdims: boolean): Shape | undefined {
  if (x.shape === undefined) return undefined;
  const r = x.shape.length;
  const set = new Set(axes.map((a) => normAxis(a, r)));
  const out: Shape = [];
  x.shape.forEach((d, i) => {
    if (!set.has(i)) out.push(d);
    else if (keepdims) out.push(1);
  });
  return out;
}

function reduce(op: string, x: Value, axes: number[], keepdims: boolean): Value {
  const g = x.g;
  return emit(g, op, [x, ints(g, axes)], { keepdims: A.i(keepdims ? 1 : 0) }, [info(x.dtype, reducedShape(x, axes, keepdims))])[0]!;
}

export const reduceSum = (x: Value, axes: number[], keepdims = true): Value => reduce('ReduceSum', x, axes, keepdims);
export const reduceMean = (x: Value, axes: number[], keepdims = true): Value => reduce('ReduceMean', x, axes, keepdims);
export const reduceMax = (x: Value, axes: number[], keepdims = true): Value => reduce('ReduceMax', x, axes, keepdims);

/** Sum of every element, as a scalar. */
export function sumAll(x: Value): Value {
  const r = need(x, 'sumAll').length;
  return reduceSum(x, [...Array(r).keys()], false);
}

export function meanAll(x: Value): Value {
  const r = need(x, 'meanAll').length;
  return reduceMean(x, [...Array(r).keys()], false);
}

export const softmax = (x: Value, axis = -1): Value => unary('Softmax', x, { axis: A.i(axis) });
export const logSoftmax = (x: Value, axis = -1): Value => unary('LogSoftmax', x, { axis: A.i(axis) });

/** LayerNormalization (opset 17) over the axes from `axis` on; only the normalised output is kept. */
export function layerNorm(x: Value, scale: Value, bias?: Value, o: { axis?: number; epsilon?: number } = {}): Value {
  const attrs = { axis: A.i(o.axis ?? -1), epsilon: A.f(o.epsilon ?? 1e-5) };
  return emit(x.g, 'LayerNormalization', [x, scale, bias], attrs, [info(x.dtype, x.shape)])[0]!;
}

/** RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x², last axis) + ε) · scale, as a decomposition. */
export function rmsNorm(x: Value, scale: Value, epsilon = 1e-6): Value {
  const ms = reduceMean(mul(x, x), [-1]);
  return mul(mul(x, reciprocal(sqrt(add(ms, epsilon)))), scale);
}

// ---------------------------------------------------------------- fused kernels (forward only)
// onnxruntime's contrib kernels for attention and RMSNorm. They have no VJP rule here (autodiff
// refuses them): forward-only programs use them, train steps the composites above. No float64
// kernels; which provider has which float32 kernel: model/forward-graph.ts, fusedKernelsFor.

/**
 * RMSNorm as onnxruntime's SimplifiedLayerNormalization (ONNX domain, contrib schema): the same
 * x / sqrt(mean(x²) + ε) · scale as rmsNorm(), computed in float32 (stash_type 1) in one kernel.
 */
export function simplifiedLayerNorm(x: Value, scale: Value, epsilon: number): Value {
  const attrs = { axis: A.i(-1), epsilon: A.f(epsilon), stash_type: A.i(1) };
  return emit(x.g, 'SimplifiedLayerNormalization', [x, scale], attrs, [info(x.dtype, x.shape)])[0]!;
}

/**
 * softmax(q·kᵀ·scale + attentionBias)·v in one kernel: com.microsoft.MultiHeadAttention with query
 * [B, T, heads·d] and key/value already split into heads [B, heads, S, d] (BNSH, no past input:
 * the caller concatenates its cache); attentionBias [B|1, 1|heads, T, S] is additive. Returns
 * [B, T, heads·d].
 */
export function multiHeadAttention(query: Value, key: Value, value: Value, attentionBias: Value, o: { heads: number; scale: number }): Value {
  const q = need(query, 'multiHeadAttention');
  const attrs = { num_heads: A.i(o.heads), scale: A.f(o.scale) };
  return emit(query.g, 'MultiHeadAttention', [query, key, value, undefined, undefined, attentionBias], attrs, [info(query.dtype, q)], { domain: MS })[0]!;
}

/**
 * Attention with grouped key/value heads in one kernel: com.microsoft.GroupQueryAttention with
 * query [B, T, heads·d], key/value [B, T, kvHeads·d] (no repeat of kv heads) and the cache
 * [B, kvHeads, P, d] appended inside (present [B, kvHeads, P + T, d]). The kernel applies its own
 * causal mask over absolute indices (query t sees keys ≤ P + t); `attentionBias` [B|1, 1|heads,
 * T, P + T] adds the rest. `seqlensK` [B] int32 is each row's total length − 1 and
 * `totalSequenceLength` an int32 scalar (P + T): every row counts as full, padding is the bias's.
 */
export function groupQueryAttention(query: Value, key: Value, value: Value, past: { key: Value; value: Value } | undefined,
  seqlensK: Value, totalSequenceLength: Value, attentionBias: Value, o: { heads: number; kvHeads: number; scale: number }): { out: Value; key: Value; value: Value } {
  const q = need(query, 'groupQueryAttention');
  const d = (q[2] as number) / o.heads;
  const cache = [q[0]!, o.kvHeads, unknownDim(query.g), d];
  const attrs = { num_heads: A.i(o.heads), kv_num_heads: A.i(o.kvHeads), scale: A.f(o.scale) };
  const [out, presentKey, presentValue] = emit(query.g, 'GroupQueryAttention',
    [query, key, value, past?.key, past?.value, seqlensK, totalSequenceLength, undefined, undefined, undefined, attentionBias], attrs,
    [info(query.dtype, q), info(key.dtype, cache), info(value.dtype, [...cache])], { domain: MS });
  return { out: out!, key: presentKey!, value: presentValue! };
}

// ---------------------------------------------------------------- activations (composites)

/**
 * log σ(x) = −log(1 + e^{−x}), with the true gradient σ(−x) everywhere. (The textbook composite
 * max(x, 0) + log(1 + e^{−|x|}) gets gradient 0 at exactly x = 0 from Relu's and Abs's
 * subgradients — and a warm-started DPO round starts at exactly Δ = 0, where it would never move.)
 * Below x = −30, log σ(x) equals x to float precision and e^{−x} would overflow, so that branch
 * returns x; the other branch's input is clamped so its unused gradient stays finite.
 */
export function logSigmoid(x: Value): Value {
  const safe = max(x, -30);
  return where(less(x, -30), x, neg(log(add(exp(neg(safe)), 1))));
}

/** softplus(x) = log(1 + eᵡ) = −log σ(−x): stable for large |x|, gradient σ(x) everywhere. */
export const softplus = (x: Value): Value => neg(logSigmoid(neg(x)));

/** SiLU / swish: x·σ(x). */
export const silu = (x: Value): Value => mul(x, sigmoid(x));

// ---------------------------------------------------------------- indexing

/** Gather along `axis` (embedding lookup with axis 0). */
export function gather(data: Value, indices: Value, axis = 0): Value {
  let shape: Shape | undefined;
  if (data.shape !== undefined && indices.shape !== undefined) {
    const a = normAxis(axis, data.shape.length);
    shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
  }
  return emit(data.g, 'Gather', [data, indices], { axis: A.i(axis) }, [info(data.dtype, shape)])[0]!;
}

/** GatherElements: out[i][j] = data[i][idx[i][j]] along `axis`; output has the indices' shape. */
export function gatherElements(data: Value, indices: Value, axis = -1): Value {
  return emit(data.g, 'GatherElements', [data, indices], { axis: A.i(axis) }, [info(data.dtype, indices.shape)])[0]!;
}

export function scatterND(data: Value, indices: Value, updates: Value, reduction: 'none' | 'add' = 'none'): Value {
  return emit(data.g, 'ScatterND', [data, indices, updates], { reduction: A.s(reduction) }, [info(data.dtype, data.shape)])[0]!;
}

export function scatterElements(data: Value, indices: Value, updates: Value, axis: number, reduction: 'none' | 'add' = 'none'): Value {
  const attrs = { axis: A.i(axis), reduction: A.s(reduction) };
  return emit(data.g, 'ScatterElements', [data, indices, updates], attrs, [info(data.dtype, data.shape)])[0]!;
}

// ---------------------------------------------------------------- shape ops

/** Shape(x)[start:end] as a 1-D int64 value. */
export function shapeOf(x: Value, start?: number, end?: number): Value {
  const attrs: Record<string, Attr> = {};
  if (start !== undefined) attrs['start'] = A.i(start);
  if (end !== undefined) attrs['end'] = A.i(end);
  let len: number | undefined;
  if (x.shape !== undefined) {
    const r = x.shape.length;
    const s = start === undefined ? 0 : start < 0 ? Math.max(0, r + start) : Math.min(start, r);
    const e = end === undefined ? r : end < 0 ? Math.max(0, r + end) : Math.min(end, r);
    len = Math.max(0, e - s);
  }
  return emit(x.g, 'Shape', [x], attrs, [info('int64', len === undefined ? undefined : [len])])[0]!;
}

/** A shape known at build time as numbers, else its runtime value Shape(x). */
export function shapeValue(x: Value): Value {
  const s = x.shape;
  if (s !== undefined && s.every((d) => typeof d === 'number')) return ints(x.g, s as number[]);
  return shapeOf(x);
}

function intData(v: Value): number[] | undefined {
  const c = constData(v);
  return c === undefined ? undefined : Array.from(c.data as BigInt64Array, Number);
}

/** Reshape to `shape` (numbers, with 0 = copy the input dim and -1 = infer) or to a runtime shape value. */
export function reshape(x: Value, shape: number[] | Value): Value {
  const g = x.g;
  const target = Array.isArray(shape) ? ints(g, shape) : shape;
  const dims = Array.isArray(shape) ? shape : intData(shape);
  let out: Shape | undefined;
  if (dims !== undefined) {
    out = dims.map((d, i) => (d === 0 ? (x.shape?.[i] ?? unknownDim(g)) : d));
    const inferred = out.indexOf(-1);
    if (inferred >= 0) {
      const known = out.filter((_, i) => i !== inferred);
      const total = x.shape?.every((d) => typeof d === 'number') ? (x.shape as number[]).reduce((p, q) => p * q, 1) : undefined;
      if (total !== undefined && known.every((d) => typeof d === 'number')) {
        out[inferred] = total / (known as number[]).reduce((p, q) => p * q, 1);
      } else if (x.shape !== undefined) {
        // Symbolic: if the known dims are a sub-multiset of the input dims, the rest multiply out.
        const rest = [...x.shape];
        let ok = true;
        for (const d of known) {
          const j = rest.findIndex((r) => sameDim(r, d));
          if (j < 0) { ok = false; break; }
          rest.splice(j, 1);
        }
        out[inferred] = ok && rest.length === 1 ? rest[0]! : ok && rest.length === 0 ? 1 : unknownDim(g);
      } else out[inferred] = unknownDim(g);
    }
  } else if (target.shape !== undefined && typeof target.shape[0] === 'number') {
    out = Array.from({ length: target.shape[0] }, () => unknownDim(g));
  }
  return emit(g, 'Reshape', [x, target], {}, [info(x.dtype, out)])[0]!;
}

export function transpose(x: Value, perm: number[]): Value {
  const shape = x.shape === undefined ? undefined : perm.map((p) => x.shape![p]!);
  return emit(x.g, 'Transpose', [x], { perm: A.ints(perm) }, [info(x.dtype, shape)])[0]!;
}

export function unsqueeze(x: Value, axes: number[]): Value {
  let shape: Shape | undefined;
  if (x.shape !== undefined) {
    const r = x.shape.length + axes.length;
    const set = new Set(axes.map((a) => normAxis(a, r)));
    shape = [];
    let k = 0;
    for (let i = 0; i < r; i++) shape.push(set.has(i) ? 1 : x.shape[k++]!);
  }
  return emit(x.g, 'Unsqueeze', [x, ints(x.g, axes)], {}, [info(x.dtype, shape)])[0]!;
}

export function squeeze(x: Value, axes: number[]): Value {
  let shape: Shape | undefined;
  if (x.shape !== undefined) {
    const set = new Set(axes.map((a) => normAxis(a, x.shape!.length)));
    shape = x.shape.filter((_, i) => !set.has(i));
  }
  return emit(x.g, 'Squeeze', [x, ints(x.g, axes)], {}, [info(x.dtype, shape)])[0]!;
}

export function concat(xs: Value[], axis: number): Value {
  const first = xs[0]!;
  const g = first.g;
  let shape: Shape | undefined;
  if (xs.every((x) => x.shape !== undefined)) {
    const a = normAxis(axis, first.shape!.length);
    const ds = xs.map((x) => x.shape![a]!);
    shape = [...first.shape!];
    shape[a] = ds.every((d) => typeof d === 'number') ? (ds as number[]).reduce((p, q) => p + q, 0) : unknownDim(g);
  }
  return emit(g, 'Concat', xs, { axis: A.i(axis) }, [info(first.dtype, shape)])[0]!;
}

const BIG = 2 ** 62;

/** Numpy-style bounds of a slice along a dim of known size n (steps of ±1 and more). */
export function sliceBounds(n: number, start: number, end: number, step: number): { begin: number; end: number; count: number } {
  const clampS = (v: number, lo: number, hi: number): number => Math.min(Math.max(v, lo), hi);
  let s = start < 0 ? start + n : start;
  let e = end < 0 ? end + n : end;
  if (step > 0) { s = clampS(s, 0, n); e = clampS(e, 0, n); } else { s = clampS(s, -1, n - 1); e = clampS(e, -1, n - 1); }
  const count = step > 0 ? Math.max(0, Math.ceil((e - s) / step)) : Math.max(0, Math.ceil((s - e) / -step));
  return { begin: s, end: e, count };
}

/** Slice with constant starts/ends (use ±2^62 for open ends), axes and steps. */
export function slice(x: Value, starts: number[], ends: number[], axes?: number[], steps?: number[]): Value {
  const g = x.g;
  const ax = axes ?? starts.map((_, i) => i);
  const st = steps ?? starts.map(() => 1);
  let shape: Shape | undefined;
  if (x.shape !== undefined) {
    shape = [...x.shape];
    ax.forEach((axis, i) => {
      const a = normAxis(axis, x.shape!.length);
      const d = x.shape![a]!;
      const s = starts[i]!;
      const e = Math.min(ends[i]!, BIG);
      if (typeof d === 'number') shape![a] = sliceBounds(d, s, e, st[i]!).count;
      else if (st[i] === 1 && s >= 0 && e >= 0 && e < BIG) shape![a] = Math.max(0, e - s); // assumes d ≥ e
      else shape![a] = unknownDim(g);
    });
  }
  const inputs = [x, ints(g, starts), ints(g, ends), ints(g, ax), ints(g, st)];
  return emit(g, 'Slice', inputs, {}, [info(x.dtype, shape)])[0]!;
}

/** Split along `axis` into pieces of the given sizes. */
export function split(x: Value, sizes: number[], axis: number): Value[] {
  const g = x.g;
  const outs = sizes.map((n) => {
    if (x.shape === undefined) return info(x.dtype, undefined);
    const s = [...x.shape];
    s[normAxis(axis, s.length)] = n;
    return info(x.dtype, s);
  });
  return emit(g, 'Split', [x, ints(g, sizes)], { axis: A.i(axis) }, outs);
}

/** Expand (broadcast) to `shape` (numbers) or a runtime shape value. */
export function expand(x: Value, shape: number[] | Value): Value {
  const g = x.g;
  const target = Array.isArray(shape) ? ints(g, shape) : shape;
  const dims = Array.isArray(shape) ? shape : intData(shape);
  let out: Shape | undefined;
  if (dims !== undefined) out = broadcastShape(g, x.shape, dims);
  return emit(g, 'Expand', [x, target], {}, [info(x.dtype, out)])[0]!;
}

export function constantOfShape(shape: Value, dtype: DType, fill: number): Value {
  const t = tensor(dtype, [1], [fill]);
  const dims = intData(shape);
  const out: Shape | undefined = dims ?? (shape.shape !== undefined && typeof shape.shape[0] === 'number'
    ? Array.from({ length: shape.shape[0] }, () => unknownDim(shape.g)) : undefined);
  return emit(shape.g, 'ConstantOfShape', [shape], { value: A.t(t) }, [info(dtype, out)])[0]!;
}

/** Zeros shaped like x (static when x's shape is numeric). */
export function zerosLike(x: Value): Value {
  const s = x.shape;
  if (s !== undefined && s.every((d) => typeof d === 'number') && s.length <= 1 && (s[0] ?? 1) <= 16) {
    return constant(x.g, tensor(x.dtype, s as number[], new Array((s[0] as number | undefined) ?? 1).fill(0)));
  }
  const z = constantOfShape(shapeValue(x), x.dtype, 0);
  return s === undefined ? z : withShape(z, s);
}

export function pad(x: Value, pads: Value, fill?: Value): Value {
  return emit(x.g, 'Pad', [x, pads, fill], { mode: A.s('constant') }, [info(x.dtype, x.shape === undefined ? undefined : x.shape.map(() => unknownDim(x.g)))])[0]!;
}

export function range(start: Value, limit: Value, delta: Value): Value {
  return emit(start.g, 'Range', [start, limit, delta], {}, [info(start.dtype, [unknownDim(start.g)])])[0]!;
}

export function nonZero(x: Value): Value {
  return emit(x.g, 'NonZero', [x], {}, [info('int64', [rankOf(x) ?? unknownDim(x.g), unknownDim(x.g)])])[0]!;
}

/**
 * Causal mask for attention scores [..., S, S]: true where key position j ≤ query position i.
 * A constant when S is a number; built from Shape(scores) with Range otherwise.
 */
export function causalMask(scores: Value): Value {
  const g = scores.g;
  const s = need(scores, 'causalMask');
  const n = s[s.length - 1]!;
  if (typeof n === 'number') {
    const m = new Uint8Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) m[i * n + j] = 1;
    return constant(g, tensor('bool', [n, n], m));
  }
  const len = squeeze(shapeOf(scores, -1), [0]);
  const pos = range(constant(g, tensor('int64', [], [0])), len, constant(g, tensor('int64', [], [1])));
  const col = withShape(unsqueeze(pos, [0]), [1, n]);
  const row = withShape(unsqueeze(pos, [1]), [n, 1]);
  return withShape(lessOrEqual(col, row), [n, n]);
}

/**
 * Additive causal bias for attention scores [..., S, S]: 0 where j ≤ i, −1e9 elsewhere, of the
 * scores' dtype. Adding it costs one broadcast Add and nothing in the backward pass (the bias is a
 * constant), cheaper than Where(mask, scores, −1e9) whose gradient is another full-size Where.
 */
export function causalBias(scores: Value): Value {
  const g = scores.g;
  const s = need(scores, 'causalBias');
  const n = s[s.length - 1]!;
  if (typeof n === 'number') {
    const m = new Array<number>(n * n).fill(0);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) m[i * n + j] = -1e9;
    return constant(g, tensor(scores.dtype, [n, n], m));
  }
  return where(causalMask(scores), scalar(g, scores.dtype, 0), -1e9);
}

/** Sum of several values of one shape (ONNX Sum). */
export function sum(xs: Value[]): Value {
  if (xs.length === 1) return xs[0]!;
  const g = xs[0]!.g;
  let shape = xs[0]!.shape;
  for (const x of xs.slice(1)) shape = broadcastShape(g, shape, x.shape);
  return emit(g, 'Sum', xs, {}, [info(xs[0]!.dtype, shape)])[0]!;
}

export const isFloatValue = (v: Value): boolean => isFloat(v.dtype);
