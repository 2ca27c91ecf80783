/**
 * Reverse-mode autodiff on a Graph: grad(loss, params) appends the backward graph for exactly the
 * paths from `loss` to the requested parameters and returns their gradients.
 *
 * Walk (as tinygrad's compute_gradient): find the values that depend on a requested parameter
 * (forward) and that the loss depends on (backward); then visit those nodes in reverse
 * topological order, sum the gradient contributions of each output, and apply the op's rule from
 * the registry in vjp.ts, asking only for the inputs on a path (so frozen weights get no
 * weight-gradient products).
 */
import { AligndError } from '../base/errors.js';
import { type Value, constant, value } from './graph.js';
import { add, constantOfShape, shapeOf, sum, zerosLike } from './ops.js';
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
    const x = n.inputs.map((i) => (i === '' ? undefined : value(g, i)));
    const y = n.outputs.map((o) => value(g, o));
    const needs = n.inputs.map((i) => i !== '' && needed.has(i));
    const dx = rule({ node: n, x, y, dy, needs });
    dx.forEach((d, i) => {
      if (d !== undefined && needs[i]) contribute(n.inputs[i]!, d);
    });
  }
  return params.map((p) => total(p.name) ?? zerosLike(p));
}

function ones(v: Value): Value {
  if (v.shape !== undefined && v.shape.length === 0) return constant(v.g, tensor(v.dtype, [], [1]));
  return constantOfShape(shapeOf(v), v.dtype, 1);
}
