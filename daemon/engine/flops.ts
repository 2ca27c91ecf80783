/**
 * FLOP count of a program's products (MatMul, FusedMatMul, Gemm: 2·M·N·K per batch element), the
 * work that dominates transformer steps; elementwise ops are not counted. Symbolic dims are
 * resolved from `sizes`.
 */
import type { Graph } from './graph.js';

export function productFlops(g: Graph, sizes: Record<string, number> = {}): number {
  const dims = (name: string): number[] | undefined => {
    const s = g.values.get(name)?.shape;
    if (s === undefined) return undefined;
    const out = s.map((d) => (typeof d === 'number' ? d : sizes[d]));
    return out.every((d) => d !== undefined) ? (out as number[]) : undefined;
  };
  let flops = 0;
  for (const n of g.nodes) {
    if (n.op !== 'MatMul' && n.op !== 'FusedMatMul' && n.op !== 'Gemm') continue;
    const a = dims(n.inputs[0]!);
    const y = dims(n.outputs[0]!);
    if (a === undefined || y === undefined) continue;
    const transA = n.attrs['transA']?.v === 1;
    const k = transA ? a[a.length - 2]! : a[a.length - 1]!;
    flops += 2 * k * y.reduce((p, q) => p * q, 1);
  }
  return flops;
}
