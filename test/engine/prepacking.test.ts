/**
 * Prepacking (issue 12, engine README § prepacking): onnxruntime's CPU MatMul packs a constant
 * float32 weight into a private copy per session; without it every session maps the one file copy.
 * prepackingFits is the engine's choice between the two. A file of its own so that memory given back
 * by other tests does not blur the readings.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { frozenExternal, graph, input, output } from '../../daemon/engine/graph.js';
import * as O from '../../daemon/engine/ops.js';
import { toOnnx } from '../../daemon/engine/onnx.js';
import { MODEL_SESSIONS, PREPACK_SHARE, type Session, createSession, f32, numbers, prepackingFits, run } from '../../daemon/engine/sessions.js';
import { randomTensor } from '../../daemon/engine/tensor.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-prepacking-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Anonymous resident memory of this process, MB. */
function resident(): { anon: number } {
  return { anon: Number(/^RssAnon:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024 };
}

t.test('prepacking copies a float32 weight into each session; off, every session maps the one file copy', async (t) => {
  // 4096 × 8192 float32 = 128 MiB in the file.
  const rows = 4096, cols = 8192;
  // Written in slices so no 128 MiB buffer of this process comes and goes during the measurement.
  const slice = randomTensor('float32', [64, cols], 21, -0.05, 0.05).data as Float32Array;
  const fd = openSync(join(dir, 'packed.f32'), 'w');
  for (let r = 0; r < rows; r += 64) writeSync(fd, slice);
  closeSync(fd);
  const build = () => {
    const g = graph('prepack');
    const x = input(g, 'x', 'float32', ['batch', rows]);
    const wt = frozenExternal(g, 'w', { dtype: 'float32', dims: [rows, cols], external: { dir, location: 'packed.f32', offset: 0, length: rows * cols * 4 } });
    output(O.matmul(x, wt), 'y');
    return toOnnx(g);
  };
  const feeds = { x: f32([2, rows], new Array(2 * rows).fill(0.01)) };
  // Both sessions stay open, so nothing is given back between the readings.
  const opened: Session[] = [];
  const grows = async (prepacking: boolean): Promise<{ anon: number; y: number[] }> => {
    const before = resident();
    const s = await createSession(build(), { threads: 1, memArena: false, prepacking });
    opened.push(s);
    const y = numbers((await run(s, feeds))['y']!);
    return { anon: resident().anon - before.anon, y };
  };
  t.teardown(async () => { for (const s of opened) await s.release(); });
  const off = await grows(false);
  const on = await grows(true);
  t.ok(off.anon < 32, `prepacking off: anonymous memory +${off.anon.toFixed(0)} MB (the weight is 128 MiB)`);
  t.ok(on.anon > 96, `prepacking on: a packed copy, +${on.anon.toFixed(0)} MB anonymous`);
  t.ok(on.y.every((v, i) => Math.abs(v - off.y[i]!) <= 1e-4 * (1 + Math.abs(v))), 'the same products either way');
});

t.test('prepackingFits: on while a packed copy per session of a model stays within its share of memory', async (t) => {
  const memory = 24 * 2 ** 30;
  const limit = (PREPACK_SHARE * memory) / MODEL_SESSIONS;
  t.ok(prepackingFits(0, memory), 'nothing to pack (half weights)');
  t.ok(prepackingFits(80e6, memory), 'a 20M-parameter float32 model');
  t.ok(prepackingFits(limit, memory), 'at the limit');
  t.notOk(prepackingFits(limit + 1, memory), 'past it');
  t.notOk(prepackingFits(4 * 494e6, memory), 'Qwen2.5-0.5B in float32 (2 GB per session)');
});
