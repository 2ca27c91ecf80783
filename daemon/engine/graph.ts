/**
 * The tensor-program data structure and its builder entry points.
 *
 * A Graph is plain data: nodes in topological order (each op is appended after its inputs exist),
 * the element type and (where known) shape of every value, graph inputs (data and trainable
 * parameters), initializers (frozen weights and constants) and outputs. Values carry their graph,
 * so op helpers (ops.ts) need no graph argument.
 *
 * Shapes: a Dim is a number or a symbolic name ('batch'); two symbolic dims are equal when their
 * names are. Dims whose value the builder cannot know get a fresh name starting with '?', equal to
 * nothing else. A shape of `undefined` means even the rank is unknown.
 *
 * Naming is deterministic (a per-graph counter), so the same program gives the same ONNX bytes.
 */
import { AligndError } from '../base/errors.js';
import { type DType, type HostTensor, onnxType, tensor, toHalf } from './tensor.js';

export type Dim = number | string;
export type Shape = Dim[];

export type Attr =
  | { type: 'int'; v: number }
  | { type: 'float'; v: number }
  | { type: 'string'; v: string }
  | { type: 'ints'; v: number[] }
  | { type: 'floats'; v: number[] }
  | { type: 'tensor'; v: HostTensor };

/** Attribute constructors: `{ axis: A.i(-1), epsilon: A.f(1e-5) }`. */
export const A = {
  i: (v: number): Attr => ({ type: 'int', v }),
  f: (v: number): Attr => ({ type: 'float', v }),
  s: (v: string): Attr => ({ type: 'string', v }),
  ints: (v: number[]): Attr => ({ type: 'ints', v }),
  floats: (v: number[]): Attr => ({ type: 'floats', v }),
  t: (v: HostTensor): Attr => ({ type: 'tensor', v }),
};

export interface Node {
  op: string;
  /** '' for the standard ONNX domain, 'com.microsoft' for contrib ops. */
  domain: string;
  name: string;
  /** Value names; '' marks an omitted optional input. */
  inputs: string[];
  outputs: string[];
  attrs: Record<string, Attr>;
  /** Set by stopGradient(): autodiff treats the node as a constant. */
  stopGradient?: boolean;
  /**
   * Set by castLate(): this Cast widens the stored weight `weight` to `to` and may be emitted
   * again next to each use, so autodiff re-emits it beside each backward product instead of
   * keeping the forward's widened copy alive until the backward pass.
   */
  recast?: { weight: string; to: DType };
}

/**
 * A frozen tensor whose bytes stay in a file (ONNX external data): onnxruntime memory-maps them
 * and alignd never reads them. `location` is relative to `dir`; every external tensor of one
 * graph lives under one `dir` (onnxruntime takes one folder per session).
 */
export interface ExternalTensor {
  dtype: DType;
  dims: number[];
  external: { dir: string; location: string; offset: number; length: number };
}

export type Initializer = HostTensor | ExternalTensor;

export const isExternal = (t: Initializer): t is ExternalTensor => 'external' in t;

/**
 * Nodes [first, end) of a recomputed segment (activation checkpointing): autodiff keeps only the
 * segment's `inputs` from the forward pass and recomputes the rest next to the segment's backward.
 */
export interface Segment { first: number; end: number; inputs: string[] }

export interface ValueInfo { dtype: DType; shape: Shape | undefined }

export interface Graph {
  name: string;
  nodes: Node[];
  values: Map<string, ValueInfo>;
  /** Graph inputs, in declaration order (data inputs and trainable parameters). */
  inputs: string[];
  /** The subset of inputs that are trainable parameters. */
  params: Set<string>;
  /** Initializers: frozen weights and constants, in creation order. */
  initializers: Map<string, Initializer>;
  /** Names of initializers that are constants made by the builder (readable for shape inference). */
  constants: Set<string>;
  outputs: string[];
  /** value name → index of the node that produces it. */
  producer: Map<string, number>;
  counter: number;
  /** Deduplicates small constants: key → initializer name. */
  constCache: Map<string, string>;
  /** Recomputed segments, in node order (see recompute()). */
  segments: Segment[];
  /** Nodes emitted so far (node names stay unique when autodiff removes unread nodes). */
  emitted: number;
}

export interface Value {
  readonly g: Graph;
  readonly name: string;
  readonly dtype: DType;
  readonly shape: Shape | undefined;
}

export function graph(name = 'alignd'): Graph {
  return {
    name, nodes: [], values: new Map(), inputs: [], params: new Set(), initializers: new Map(),
    constants: new Set(), outputs: [], producer: new Map(), counter: 0, constCache: new Map(), segments: [], emitted: 0,
  };
}

export function value(g: Graph, name: string): Value {
  const info = g.values.get(name);
  if (info === undefined) {
    throw new AligndError('ENGINE_INVALID_GRAPH', `no value named '${name}' in graph '${g.name}'`,
      { action: 'use a name returned by the builder' });
  }
  return { g, name, dtype: info.dtype, shape: info.shape };
}

function declare(g: Graph, name: string, info: ValueInfo): Value {
  if (g.values.has(name)) {
    throw new AligndError('ENGINE_INVALID_GRAPH', `value name '${name}' is already used in graph '${g.name}'`,
      { action: 'give each input, parameter and weight a unique name' });
  }
  g.values.set(name, info);
  return { g, name, dtype: info.dtype, shape: info.shape };
}

/** The same value with a shape the caller knows better than inference did (recorded in the graph). */
export function withShape(v: Value, shape: Shape | undefined): Value {
  v.g.values.set(v.name, { dtype: v.dtype, shape });
  return { g: v.g, name: v.name, dtype: v.dtype, shape };
}

/** A fresh, deterministic name. */
export function fresh(g: Graph, stem: string): string {
  let name = `${stem}_${g.counter++}`;
  while (g.values.has(name)) name = `${stem}_${g.counter++}`;
  return name;
}

/** A dim the builder cannot know; equal to no other dim. */
export function unknownDim(g: Graph): string {
  return `?${g.counter++}`;
}

/** A data input fed on every run (token ids, masks, activations). */
export function input(g: Graph, name: string, dtype: DType, shape: Shape): Value {
  const v = declare(g, name, { dtype, shape: [...shape] });
  g.inputs.push(name);
  return v;
}

/** A trainable parameter: a graph input whose gradient grad() can ask for; fed on every run. */
export function param(g: Graph, name: string, dtype: DType, shape: Shape): Value {
  const v = input(g, name, dtype, shape);
  g.params.add(name);
  return v;
}

/**
 * A frozen weight, stored in the model as an initializer and loaded once per session.
 * `storage: 'float16'` halves its size; a Cast back to the tensor's dtype follows it.
 */
export function frozen(g: Graph, name: string, t: HostTensor, opts: { storage?: 'float16' } = {}): Value {
  if (opts.storage === 'float16' && t.dtype !== 'float16') {
    const half = tensor('float16', t.dims, Uint16Array.from(t.data as ArrayLike<number>, (x) => toHalf(Number(x))));
    const stored = declare(g, `${name}.f16`, { dtype: 'float16', shape: [...t.dims] });
    g.initializers.set(stored.name, half);
    return emit(g, 'Cast', [stored], { to: A.i(onnxType[t.dtype]) }, [{ dtype: t.dtype, shape: [...t.dims] }], { outNames: [name] })[0]!;
  }
  const v = declare(g, name, { dtype: t.dtype, shape: [...t.dims] });
  g.initializers.set(name, t);
  return v;
}

/** A frozen weight left in its file (see ExternalTensor), in the file's own element type. */
export function frozenExternal(g: Graph, name: string, t: ExternalTensor): Value {
  const v = declare(g, name, { dtype: t.dtype, shape: [...t.dims] });
  g.initializers.set(name, t);
  return v;
}

/** A constant tensor (small constants are shared between uses). */
export function constant(g: Graph, t: HostTensor): Value {
  const small = t.data.length <= 16;
  const key = small ? `${t.dtype}|${t.dims.join(',')}|${Array.from(t.data as ArrayLike<number | bigint>, String).join(',')}` : '';
  if (small) {
    const hit = g.constCache.get(key);
    if (hit !== undefined) return value(g, hit);
  }
  const v = declare(g, fresh(g, 'const'), { dtype: t.dtype, shape: [...t.dims] });
  g.initializers.set(v.name, t);
  g.constants.add(v.name);
  if (small) g.constCache.set(key, v.name);
  return v;
}

/** The data of a value when it is a builder constant (for shape inference), else undefined. */
export function constData(v: Value): HostTensor | undefined {
  return v.g.constants.has(v.name) ? v.g.initializers.get(v.name) as HostTensor : undefined;
}

/**
 * Activation checkpointing (Chen et al. 2016, "Training deep nets with sublinear memory cost"):
 * the nodes `build` appends form a segment whose forward values autodiff does not keep; the
 * backward pass recomputes them from `inputs` right before it needs them. Returns build's result.
 */
export function recompute<T>(g: Graph, inputs: Value[], build: () => T): T {
  const first = g.nodes.length;
  const out = build();
  g.segments.push({ first, end: g.nodes.length, inputs: inputs.map((v) => v.name) });
  return out;
}

/** Mark a value as a graph output, renamed to `name` when given (an Identity node does the renaming). */
export function output(v: Value, name?: string): Value {
  const g = v.g;
  let out = v;
  if (name !== undefined && name !== v.name) {
    out = emit(g, 'Identity', [v], {}, [{ dtype: v.dtype, shape: v.shape }], { outNames: [name] })[0]!;
  }
  if (g.outputs.includes(out.name)) {
    throw new AligndError('ENGINE_INVALID_GRAPH', `'${out.name}' is already an output of graph '${g.name}'`,
      { action: 'mark each output once' });
  }
  g.outputs.push(out.name);
  return out;
}

export interface EmitOptions { domain?: string; outNames?: string[]; stopGradient?: boolean; recast?: Node['recast'] }

/**
 * Append one node. Inputs may be undefined for omitted optional inputs. Output types are given by
 * the caller (the op helpers in ops.ts infer them).
 */
export function emit(g: Graph, op: string, inputs: (Value | undefined)[], attrs: Record<string, Attr>,
  outs: ValueInfo[], opts: EmitOptions = {}): Value[] {
  for (const x of inputs) {
    if (x !== undefined && x.g !== g) {
      throw new AligndError('ENGINE_INVALID_GRAPH', `${op}: input '${x.name}' belongs to graph '${x.g.name}', not '${g.name}'`,
        { action: 'build each program from values of one graph' });
    }
  }
  const index = g.nodes.length;
  const outputs = outs.map((info, i) => declare(g, opts.outNames?.[i] ?? fresh(g, op.toLowerCase()), info));
  const node: Node = {
    op, domain: opts.domain ?? '', name: `${op}_${g.emitted++}`,
    inputs: inputs.map((x) => x?.name ?? ''), outputs: outputs.map((o) => o.name), attrs,
  };
  if (opts.stopGradient) node.stopGradient = true;
  if (opts.recast !== undefined) node.recast = opts.recast;
  g.nodes.push(node);
  for (const o of outputs) g.producer.set(o.name, index);
  return outputs;
}
