/**
 * No size walls (issue 12): a model whose weights exceed 4 GiB — one float16 tensor of 4.4 GB, over
 * Node's 4 GiB typed-array limit and protobuf's 2 GiB — written by the test in chunks (safetensors,
 * random rows stamped with their index), indexed from its header, and run by onnxruntime from the
 * memory-mapped file: rows gathered past the 4 GiB offset come back bit for bit, a product over a
 * block of rows past it matches float arithmetic, and the process never holds the tensor in memory.
 * The file is deleted after. Takes the disk space of the tensor for the duration of the test.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import t from 'tap';
import { frozenExternal, graph, input, output } from '../../daemon/engine/graph.js';
import * as O from '../../daemon/engine/ops.js';
import { toOnnx } from '../../daemon/engine/onnx.js';
import { createSession, f32, i64, numbers, run } from '../../daemon/engine/sessions.js';
import { fromHalf } from '../../daemon/engine/tensor.js';
import { createRng } from '../../daemon/base/random.js';
import { indexSafetensors, writeSafetensorsStreaming } from '../../daemon/model/safetensors.js';

const ROWS = 2_150_000;
const COLS = 1024;
const BYTES = ROWS * COLS * 2;
const TEMPLATE_ROWS = 4096;

const dir = mkdtempSync(join(tmpdir(), 'alignd-big-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const anonMb = (): number => Number(/^RssAnon:\s+(\d+)/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;

// Random finite halves in [0, 1) for a block of rows, reused down the tensor; each row's first
// three elements stamp its index (10 bits each, as halves in [1, 2)), so a row read from a wrong
// offset cannot pass.
const template = new Uint16Array(TEMPLATE_ROWS * COLS);
const rng = createRng(2026);
for (let i = 0; i < template.length; i++) template[i] = Math.floor(rng.next() * 0x3bff);
function row(r: number): Uint16Array {
  const out = template.slice((r % TEMPLATE_ROWS) * COLS, (r % TEMPLATE_ROWS + 1) * COLS);
  for (let k = 0; k < 3; k++) out[k] = 0x3c00 | ((r >>> (10 * k)) & 0x3ff);
  return out;
}

t.test('a 4.4 GB float16 weight: written in chunks, mapped by onnxruntime, read back exactly past 4 GiB', async (t) => {
  const anon0 = anonMb();
  const path = join(dir, 'model.safetensors');
  writeSafetensorsStreaming(path, [{ name: 'embed', dtype: 'F16', shape: [ROWS, COLS] }], (_, chunk, at) => {
    const halves = new Uint16Array(chunk.buffer, chunk.byteOffset, chunk.byteLength / 2);
    const first = at / 2 / COLS; // chunks hold whole rows: 16 MiB is a multiple of a row's 2 KiB
    for (let r = 0; r < halves.length / COLS; r++) halves.set(row(first + r), r * COLS);
  });
  const loc = indexSafetensors(path).tensors.get('embed')!;
  t.equal(loc.length, BYTES, `the tensor is ${BYTES} bytes`);
  t.ok(loc.offset + loc.length > 2 ** 32, 'it ends past 4 GiB in the file');

  const g = graph('big');
  const ids = input(g, 'ids', 'int64', ['k']);
  const x = input(g, 'x', 'float32', ['batch', COLS]);
  const ext = { dir, location: 'model.safetensors', offset: loc.offset, length: loc.length };
  const w = frozenExternal(g, 'embed', { dtype: 'float16', dims: [ROWS, COLS], external: ext });
  output(O.gather(w, ids, 0), 'rows');
  // The last 10,000 rows as their own reference into the same bytes, widened next to the product.
  const tail = 10_000;
  const block = frozenExternal(g, 'embed.tail', { dtype: 'float16', dims: [tail, COLS], external: { ...ext, offset: ext.offset + (ROWS - tail) * COLS * 2, length: tail * COLS * 2 } });
  output(O.matmul(x, O.castLate(block, 'float32', x), { transB: true }), 'y');
  const program = toOnnx(g);
  t.ok(program.bytes.length < 4096, `the model holds no weight bytes (${program.bytes.length} bytes)`);

  const wanted = [0, 1, 1_048_575, 2_097_151, 2_097_152, ROWS - 1];
  const xs = Array.from({ length: COLS }, (_, i) => Math.cos(i) / 64);
  const out = await run(await createSession(program, { threads: 1 }), { ids: i64([wanted.length], wanted), x: f32([1, COLS], xs) });
  const got = out['rows']! as ort.Tensor;
  t.equal(got.type, 'float16', 'rows come back in the stored type');
  const bits = got.data as Uint16Array;
  wanted.forEach((r, i) => t.same(Array.from(bits.subarray(i * COLS, (i + 1) * COLS)), Array.from(row(r)), `row ${r} (file offset ${loc.offset + r * COLS * 2}) bit for bit`));

  const y = numbers(out['y']!);
  let worst = 0;
  for (const j of [0, 4_321, tail - 1]) {
    const r = row(ROWS - tail + j);
    let s = 0;
    for (let c = 0; c < COLS; c++) s += Math.fround(xs[c]!) * fromHalf(r[c]!);
    worst = Math.max(worst, Math.abs(s - y[j]!) / Math.max(1, Math.abs(s)));
  }
  t.ok(worst < 1e-5, `x·Wᵀ over rows past 4 GiB as float arithmetic (relative error ${worst.toExponential(2)})`);
  t.ok(anonMb() - anon0 < 512, `no copy of the tensor in the process (anonymous memory +${(anonMb() - anon0).toFixed(0)} MB for a ${(BYTES / 2 ** 30).toFixed(1)} GiB tensor)`);
});
