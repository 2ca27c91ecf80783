/**
 * Where a program's time goes: onnxruntime's own profiler (session option enableProfiling) on a
 * copy of the program's session, one run of `work` with it, kernel time summed by op type. Each
 * "Node" event of the trace (Chrome trace format) is one kernel run: dur in µs, args.op_name.
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Graph, type RuntimeOptions, type Session, createSession, toOnnx } from '../daemon/engine/index.js';

interface TraceEvent { cat?: string; name?: string; dur?: number; args?: { op_name?: string } }

/** Kernel time by op type, largest first, from a profile file's events. */
export function opShares(events: readonly TraceEvent[]): { op: string; ms: number; share: number }[] {
  const byOp = new Map<string, number>();
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name?.endsWith('_kernel_time') || e.args?.op_name === undefined) continue;
    byOp.set(e.args.op_name, (byOp.get(e.args.op_name) ?? 0) + (e.dur ?? 0));
  }
  const total = [...byOp.values()].reduce((s, x) => s + x, 0);
  return [...byOp].map(([op, us]) => ({ op, ms: +(us / 1000).toFixed(1), share: +(us / total).toFixed(3) })).sort((a, b) => b.ms - a.ms);
}

/** Profile one run of `work` on a fresh session of `graph` (the model's runtime options); the top ops as one string and the kernel total. */
export async function profileStep(graph: Graph, runtime: RuntimeOptions, work: (session: Session) => Promise<unknown>): Promise<Record<string, string | number>> {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-profile-'));
  try {
    const session = await createSession(toOnnx(graph), { ...runtime, profileFilePrefix: join(dir, 'step') });
    await work(session);
    session.endProfiling();
    const file = readdirSync(dir).find((f) => f.endsWith('.json'));
    if (file === undefined) throw new Error(`onnxruntime wrote no profile under ${dir}`);
    const shares = opShares(JSON.parse(readFileSync(join(dir, file), 'utf8')) as TraceEvent[]);
    await session.release();
    return {
      profile_kernel_ms: +shares.reduce((s, x) => s + x.ms, 0).toFixed(1),
      profile_top_ops: shares.slice(0, 12).map((s) => `${s.op} ${(100 * s.share).toFixed(1)}%`).join(', '),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
