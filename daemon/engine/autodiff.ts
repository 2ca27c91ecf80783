/**
 * Reverse-mode autodiff on a Graph: grad(loss, params) appends the backward graph for exactly the
 * paths from `loss` to the requested parameters and returns their gradients.
 *
 * Walk (as tinygrad's compute_gradient): find the values that depend on a requested parameter
 * (forward) and that the loss depends on (backward); then visit those nodes in reverse
 * topological order, sum the gradient contributions of each output, and apply the op's rule from
 * the registry in vjp.ts, asking only for the inputs on a path (so frozen weights get no
 * weight-gradient products).
 *
 * Two memory rules shape what the backward pass reads from the forward pass:
 * - a weight widened by castLate() is widened again beside each backward product (a fresh
 *   castLate tied to that node's incoming gradient), never kept from the forward pass (inside a
 *   recomputed segment, the recomputed widening serves the segment's backward);
 * - inside a recompute() segment, the rules read a copy of the segment's forward nodes emitted
 *   from its saved inputs and tied to the segment's incoming gradient, so the forward pass keeps
 *   only the segment inputs. Random draws (dropout masks) are not recomputed: they are read from
 *   the forward pass, so the gradient is that of the step's own draw.
 * Nodes the backward pass emitted but nothing reads are removed at the end.
 */
import { AligndError } from '../base/errors.js';
import { type Graph, type Node, type Segment, type Value, constant, emit, fresh, value } from './graph.js';
import { add, after, castLate, constantOfShape, shapeOf, sum, zerosLike } from './ops.js';
import { isFloat, tensor } from './tensor.js';
import { nonDifferentiable, vjp } from './vjp.js';

export interface GradOptions {
  /** Gradient of the loss itself (default: ones, i.e. d loss / d loss = 1 for a scalar loss). */
  seed?: Value;
}

/** d loss / d p for each p in params (zeros where the loss does not depend on p). */
export function grad(loss: Value, params: Value[], opts: GradOptions = {}): Value[] {
  const g = loss.g;
  if (!isFloat(loss.dtype)) {
    throw new AligndError('ENGINE_INVALID_GRAPH', `cannot differentiate '${loss.name}' of type ${loss.dtype}`, { action: 'differentiate a float loss' });
  }
  const nodes = g.nodes.slice();

  // Forward: values that depend on a requested parameter.
  const reach = new Set(params.map((p) => p.name));
  for (const n of nodes) {
    if (n.stopGradient || nonDifferentiable.has(n.op)) continue;
    if (n.inputs.some((i) => reach.has(i))) {
      for (const o of n.outputs) if (isFloat(g.values.get(o)!.dtype)) reach.add(o);
    }
  }
  // Backward: of those, the ones the loss depends on.
  const needed = new Set<string>();
  if (reach.has(loss.name)) needed.add(loss.name);
  for (let k = nodes.length - 1; k >= 0; k--) {
    const n = nodes[k]!;
    if (n.stopGradient || nonDifferentiable.has(n.op) || !n.outputs.some((o) => needed.has(o))) continue;
    for (const i of n.inputs) if (reach.has(i)) needed.add(i);
  }

  const contributions = new Map<string, Value[]>();
  const contribute = (name: string, d: Value): void => {
    const list = contributions.get(name);
    if (list === undefined) contributions.set(name, [d]);
    else list.push(d);
  };
  const total = (name: string): Value | undefined => {
    const list = contributions.get(name);
    if (list === undefined) return undefined;
    const d = list.length === 1 ? list[0]! : list.length === 2 ? add(list[0]!, list[1]!) : sum(list);
    contributions.set(name, [d]);
    return d;
  };

  if (needed.has(loss.name)) contribute(loss.name, opts.seed ?? ones(loss));

  const segmentAt = new Map<number, Segment>();
  for (const s of g.segments) for (let k = s.first; k < s.end; k++) segmentAt.set(k, s);
  const recomputed = new Map<Segment, Map<string, string>>();

  for (let k = nodes.length - 1; k >= 0; k--) {
    const n = nodes[k]!;
    if (n.stopGradient || nonDifferentiable.has(n.op) || !n.outputs.some((o) => needed.has(o))) continue;
    const dy = n.outputs.map((o) => (needed.has(o) ? total(o) : undefined));
    if (dy.every((d) => d === undefined)) continue;
    const rule = vjp[n.op];
    if (rule === undefined) {
      throw new AligndError('ENGINE_INVALID_GRAPH', `no gradient rule for op ${n.op} (node '${n.name}') on the path from '${loss.name}' to a parameter`,
        { input: n.name, action: 'add a rule to daemon/engine/vjp.ts, or wrap the input in stopGradient() if no gradient should flow' });
    }
    const dep = dy.find((d) => d !== undefined)!;
    const seg = segmentAt.get(k);
    let copy: Map<string, string> | undefined;
    if (seg !== undefined) {
      copy = recomputed.get(seg);
      if (copy === undefined) {
        copy = recomputeSegment(g, nodes, seg, dep);
        recomputed.set(seg, copy);
      }
    }
    // A recomputed value (a widened weight included: the recomputed forward and this backward
    // share it); else a widened weight widened again here; else the forward's value.
    const read = (name: string): Value => {
      const c = copy?.get(name);
      if (c !== undefined) return value(g, c);
      const p = g.producer.get(name);
      const recast = p === undefined ? undefined : g.nodes[p]!.recast;
      return recast === undefined ? value(g, name) : castLate(value(g, recast.weight), recast.to, dep);
    };
    const x = n.inputs.map((i) => (i === '' ? undefined : read(i)));
    const y = n.outputs.map((o) => value(g, copy?.get(o) ?? o));
    const needs = n.inputs.map((i) => i !== '' && needed.has(i));
    const dx = rule({ node: n, x, y, dy, needs });
    dx.forEach((d, i) => {
      if (d !== undefined && needs[i]) contribute(n.inputs[i]!, d);
    });
  }
  const grads = params.map((p) => total(p.name) ?? zerosLike(p));
  removeUnread(g, nodes.length, grads);
  return grads;
}

/** Ops whose output is a fresh random draw: never recomputed (the backward must see the forward's draw). */
const RANDOM = new Set(['RandomUniformLike', 'RandomNormalLike', 'RandomUniform', 'RandomNormal', 'Multinomial', 'Bernoulli', 'Dropout']);

/** Emit a copy of a segment's nodes reading its inputs tied to `dep`; returns original → copy names. */
function recomputeSegment(g: Graph, nodes: Node[], seg: Segment, dep: Value): Map<string, string> {
  const map = new Map<string, string>();
  for (const name of seg.inputs) map.set(name, after(value(g, name), dep).name);
  for (let j = seg.first; j < seg.end; j++) {
    const n = nodes[j]!;
    if (RANDOM.has(n.op)) continue;
    const inputs = n.inputs.map((i) => (i === '' ? undefined : value(g, map.get(i) ?? i)));
    const outs = n.outputs.map((o) => g.values.get(o)!);
    const names = n.outputs.map((o) => fresh(g, `${o}.re`));
    emit(g, n.op, inputs, n.attrs, outs, {
      domain: n.domain, outNames: names, ...(n.stopGradient ? { stopGradient: true } : {}), ...(n.recast ? { recast: n.recast } : {}),
    });
    n.outputs.forEach((o, i) => map.set(o, names[i]!));
  }
  return map;
}

/**
 * Drop the nodes appended from index `from` on whose outputs nothing reads (not a graph output,
 * not a returned gradient, no later consumer): recomputed values a rule did not use, products a
 * rule built for an input that needed none. Earlier nodes are the caller's and stay.
 */
function removeUnread(g: Graph, from: number, keep: Value[]): void {
  const read = new Set<string>([...g.outputs, ...keep.map((v) => v.name)]);
  const live = new Array<boolean>(g.nodes.length).fill(true);
  for (let k = g.nodes.length - 1; k >= from; k--) {
    const n = g.nodes[k]!;
    live[k] = n.outputs.some((o) => read.has(o));
    if (live[k]) for (const i of n.inputs) read.add(i);
  }
  if (live.every(Boolean)) return;
  for (let k = from; k < g.nodes.length; k++) {
    if (!live[k]) for (const o of g.nodes[k]!.outputs) g.values.delete(o);
  }
  g.nodes = g.nodes.filter((_, k) => live[k]);
  g.producer.clear();
  g.nodes.forEach((n, k) => { for (const o of n.outputs) g.producer.set(o, k); });
}

function ones(v: Value): Value {
  if (v.shape !== undefined && v.shape.length === 0) return constant(v.g, tensor(v.dtype, [], [1]));
  return constantOfShape(shapeOf(v), v.dtype, 1);
}
