/**
 * Weights as ONNX external data (issue 12): in-memory tensors written in chunks round-trip
 * bit-exactly through onnxruntime; tensors already in a file are read in place (memory-mapped,
 * shared by sessions) and half-precision ones stay half — widened one at a time next to their use
 * (castLate), never folded into float32 copies at session creation.
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import t from 'tap';
import { frozen, frozenExternal, graph, input, output } from '../../daemon/engine/graph.js';
import * as O from '../../daemon/engine/ops.js';
import { toOnnx, writeExternalFile } from '../../daemon/engine/onnx.js';
import { createSession, f32, numbers, run } from '../../daemon/engine/sessions.js';
import { fromBfloat16, randomTensor, toBfloat16 } from '../../daemon/engine/tensor.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-external-'));
/** The built engine (npm test builds dist/ first), for the measurements made in a child process. */
const engineJs = resolve(fileURLToPath(new URL('../../', import.meta.url)), 'dist/daemon/engine/index.js');
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Anonymous and file-backed resident memory of this process, MB. */
function resident(): { anon: number; file: number } {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)![1]) / 1024;
  return { anon: kb('RssAnon'), file: kb('RssFile') };
}

t.test('the external-data writer puts every chunk at its offset', async (t) => {
  const parts = [0, 1500, 4096, 70001].map((offset, i) => ({ offset, bytes: Uint8Array.from({ length: 1000 + 37 * i }, (_, j) => (j * 31 + i) & 0xff) }));
  const path = join(dir, 'chunks.bin');
  writeExternalFile(path, parts, 7); // 7-byte writes: every tensor crosses chunk boundaries
  const file = readFileSync(path);
  for (const p of parts) t.same(Buffer.from(file.subarray(p.offset, p.offset + p.bytes.length)), Buffer.from(p.bytes), `bytes at ${p.offset}`);
  t.equal(file.length, 70001 + 1000 + 37 * 3, 'nothing after the last tensor');
});

t.test('in-memory weights written as external data come back from onnxruntime bit for bit', async (t) => {
  const g = graph('roundtrip');
  const x = input(g, 'x', 'float32', ['n', 1]);
  const tensors = [randomTensor('float32', [300, 7], 1), randomTensor('float64', [5, 3], 2), randomTensor('float16', [129], 3), randomTensor('int64', [11], 4, -1e6, 1e6)];
  tensors.forEach((w, i) => output(frozen(g, `w${i}`, w), `out${i}`));
  output(x, 'x_out');
  const sub = join(dir, 'roundtrip');
  (await import('node:fs')).mkdirSync(sub);
  const e = toOnnx(g, { external: { dir: sub, file: 'weights.bin', thresholdBytes: 0, align: 64 } });
  t.equal(e.externalDir, sub);
  t.ok(e.bytes.length < 4000, `no tensor bytes left in the model (${e.bytes.length} bytes)`);
  const out = await run(await createSession(e), { x: f32([1, 1], [1]) });
  tensors.forEach((w, i) => {
    const got = out[`out${i}`]!.data as ArrayLike<unknown>;
    t.same(Buffer.from((got as Uint8Array).buffer, (got as Uint8Array).byteOffset, (got as Uint8Array).byteLength),
      Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength), `${w.dtype} [${w.dims}] identical`);
  });
});

/** A bfloat16 matrix written to a file; its values and where it is. */
function bf16File(name: string, rows: number, cols: number, seed: number): { path: string; bits: Uint16Array } {
  const w = randomTensor('float32', [rows, cols], seed, -0.05, 0.05);
  const bits = Uint16Array.from(w.data as Float32Array, toBfloat16);
  const path = join(dir, name);
  writeFileSync(path, new Uint8Array(bits.buffer));
  return { path, bits };
}

t.test('a bfloat16 weight in a file: read in place, widened next to its product, results as float32 arithmetic', async (t) => {
  const rows = 48, cols = 32;
  const { bits } = bf16File('w.bf16', rows, cols, 5);
  const g = graph('bf16');
  const x = input(g, 'x', 'float32', ['batch', cols]);
  const w = frozenExternal(g, 'w', { dtype: 'bfloat16', dims: [rows, cols], external: { dir, location: 'w.bf16', offset: 0, length: rows * cols * 2 } });
  output(O.matmul(x, O.castLate(w, 'float32', x), { transB: true }), 'y');
  t.equal(g.initializers.get('w')!.dtype, 'bfloat16', 'the initializer stays bfloat16');
  const xs = Array.from({ length: 2 * cols }, (_, i) => Math.sin(i));
  const y = numbers((await run(await createSession(toOnnx(g)), { x: f32([2, cols], xs) }))['y']!);
  let worst = 0;
  for (let b = 0; b < 2; b++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let c = 0; c < cols; c++) s += Math.fround(xs[b * cols + c]!) * fromBfloat16(bits[r * cols + c]!);
      worst = Math.max(worst, Math.abs(s - y[b * rows + r]!));
    }
  }
  t.ok(worst < 1e-5, `y = x·Wᵀ with W's bfloat16 values (max error ${worst.toExponential(2)})`);
});

t.test('half weights stay half: no float32 copy at session creation, the file mapped once per session', async (t) => {
  // 4096 × 8192 bfloat16 = 64 MiB in the file, 128 MiB as float32.
  const rows = 4096, cols = 8192;
  const path = join(dir, 'big.bf16');
  const fd = openSync(path, 'w');
  const chunk = new Uint16Array(cols * 256);
  for (let i = 0; i < chunk.length; i++) chunk[i] = 0x3c00 + (i % 97); // small bfloat16 values
  for (let r = 0; r < rows; r += 256) writeSync(fd, chunk);
  closeSync(fd);
  const build = (late: boolean) => {
    const g = graph(late ? 'late' : 'plain');
    const x = input(g, 'x', 'float32', ['batch', cols]);
    const w = frozenExternal(g, 'w', { dtype: 'bfloat16', dims: [rows, cols], external: { dir, location: 'big.bf16', offset: 0, length: rows * cols * 2 } });
    output(O.matmul(x, late ? O.castLate(w, 'float32', x) : O.cast(w, 'float32'), { transB: true }), 'y');
    return toOnnx(g);
  };
  const feeds = { x: f32([1, cols], new Array(cols).fill(0.001)) };
  // Arena off so a run's transient widened copy goes back to the system and only a kept copy shows.
  const opts = { threads: 1, memArena: false };
  const before = resident();
  const late = await createSession(build(true), opts);
  await run(late, feeds);
  const afterLate = resident();
  t.ok(afterLate.anon - before.anon < 48, `castLate: anonymous memory +${(afterLate.anon - before.anon).toFixed(0)} MB (a float32 copy would be +128)`);
  t.ok(afterLate.file - before.file > 48, `the bfloat16 file is mapped (+${(afterLate.file - before.file).toFixed(0)} MB file-backed)`);
  // The control: a plain Cast of the weight is folded into a float32 constant by onnxruntime's optimizer.
  const plain = await createSession(build(false), opts);
  await run(plain, feeds);
  const afterPlain = resident();
  t.ok(afterPlain.anon - afterLate.anon > 100, `a plain Cast is folded into a float32 copy (+${(afterPlain.anon - afterLate.anon).toFixed(0)} MB): the test can fail`);
  await late.release();
  await plain.release();
});

t.test('castLate widens each weight next to its use: the peak holds a few widened weights, not all', async (t) => {
  const n = 8, rows = 1536, cols = 1536; // each 4.5 MiB as bfloat16, 9 MiB as float32
  for (let i = 0; i < n; i++) bf16File(`layer${i}.bf16`, rows, cols, 10 + i);
  // Each variant runs in a fresh process with glibc's mmap threshold fixed: every widened copy is
  // its own mapping, unmapped when freed, so the peak RSS is what was alive at once. In this
  // process the peak also depended on what earlier tests left in the heap (glibc raises the
  // threshold after large frees and reuses resident heap pages), and the check failed by chance.
  const script = join(dir, 'cast-late-peak.mjs');
  writeFileSync(script, `
    import { readFileSync, writeFileSync } from 'node:fs';
    import { createSession, f32, frozenExternal, graph, input, ops as O, output, run, toOnnx } from ${JSON.stringify(pathToFileURL(engineJs).href)};
    const [dir, tied, n, rows, cols] = [process.argv[2], process.argv[3] === 'tied', ...process.argv.slice(4).map(Number)];
    const g = graph(tied ? 'chain_late' : 'chain_early');
    const x0 = input(g, 'x', 'float32', ['batch', cols]);
    let x = x0;
    for (let i = 0; i < n; i++) {
      const w = frozenExternal(g, 'w' + i, { dtype: 'bfloat16', dims: [rows, cols], external: { dir, location: 'layer' + i + '.bf16', offset: 0, length: rows * cols * 2 } });
      // Tied to the program input instead, every widening may run first (onnxruntime's order).
      x = O.tanh(O.matmul(x, O.castLate(w, 'float32', tied ? x : x0), { transB: true }));
    }
    output(x, 'y');
    const status = (k) => Number(readFileSync('/proc/self/status', 'utf8').split('\\n').find((l) => l.startsWith(k + ':')).replace(/[^0-9]/g, '')) / 1024; // kB → MB
    const s = await createSession(toOnnx(g), { threads: 1, memArena: false });
    writeFileSync('/proc/self/clear_refs', '5'); // the peak RSS starts again from the current RSS
    const rss0 = status('VmRSS');
    await run(s, { x: f32([1, cols], new Array(cols).fill(0.01)) });
    console.log(JSON.stringify({ grew: status('VmHWM') - rss0 }));
  `);
  const peak = (variant: 'tied' | 'early'): number => {
    const out = execFileSync(process.execPath, [script, dir, variant, String(n), String(rows), String(cols)], {
      env: { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=1048576' }, encoding: 'utf8',
    });
    return (JSON.parse(out.trim().split('\n').at(-1)!) as { grew: number }).grew;
  };
  const tied = peak('tied');
  const early = peak('early');
  // Both map the 36 MiB of bfloat16 files; the widened float32 copies are 9 MiB each.
  t.ok(tied < early - 27, `tied to the activation: peak +${tied.toFixed(0)} MB; tied to the input: +${early.toFixed(0)} MB`);
  t.ok(tied < 36 + 4 * 9, `a few widened weights alive at once (+${tied.toFixed(0)} MB over ${n} weights of 9 MiB)`);
});
