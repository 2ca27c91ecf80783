// safetensors: byte-exact round trips of files the Python `safetensors` library wrote, value
// decoding of every common dtype, sharded checkpoints, and clear errors on damaged files.
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../daemon/model/half.js';
import {
  fromFloat32, parseSafetensors, readCheckpointTensors, readSafetensors, serializeSafetensors, toFloat32, writeCheckpointTensors,
  type TensorEntry,
} from '../../daemon/model/safetensors.js';
import { AligndError } from '../../daemon/base/errors.js';
import { PARITY, readJson } from './fixtures.js';

function allSafetensors(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...allSafetensors(p));
    else if (name.endsWith('.safetensors')) out.push(p);
  }
  return out;
}

t.test('every fixture file written by Python safetensors round-trips byte for byte', async (t) => {
  const files = allSafetensors(PARITY);
  t.ok(files.length >= 20, `${files.length} files`);
  for (const f of files) {
    const bytes = new Uint8Array(readFileSync(f));
    const parsed = parseSafetensors(bytes, f);
    const again = serializeSafetensors(parsed.tensors, parsed.metadata);
    t.ok(Buffer.from(again).equals(Buffer.from(bytes)), `${f.slice(PARITY.length)} identical`);
  }
});

t.test('mixed dtypes decode to the values Python recorded', async (t) => {
  const want = readJson<Record<string, { dtype: string; shape: number[]; values: number[] }>>('mixed.json');
  const { tensors, metadata } = readSafetensors(join(PARITY, 'mixed.safetensors'));
  t.same(metadata, { format: 'pt', note: 'alignd parity', a: '1' });
  t.same([...tensors.keys()].sort(), Object.keys(want).sort());
  for (const [name, w] of Object.entries(want)) {
    const tensor = tensors.get(name)!;
    t.same(tensor.shape, w.shape, `${name} shape`);
    const got = toFloat32(tensor);
    // Exact: F16/BF16 widen exactly; I64 values here fit a float32 exactly; F64 is rounded to f32.
    t.same([...got], w.values.map((v) => Math.fround(v)), `${name} (${tensor.dtype}) values`);
  }
});

t.test('F32 tensors are zero-copy views into the file buffer', async (t) => {
  const bytes = new Uint8Array(readFileSync(join(PARITY, 'gpt2/model/model.safetensors')));
  const { tensors } = parseSafetensors(bytes);
  const wte = tensors.get('transformer.wte.weight')!;
  const view = toFloat32(wte);
  t.equal(view.buffer, bytes.buffer, 'same ArrayBuffer');
  t.equal(view.byteOffset, wte.data.byteOffset);
  t.equal(view.length, 64 * 16);
  const before = view[0]!;
  const signByte = wte.data.byteOffset - bytes.byteOffset + 3; // little-endian: sign bit of element 0
  bytes[signByte] = bytes[signByte]! ^ 0x80;
  t.equal(view[0], -before, 'the view sees the change');
});

t.test('F16 and BF16 encoders invert the decoders on every 16-bit pattern', async (t) => {
  let badF16 = 0;
  let badBf16 = 0;
  for (let h = 0; h < 0x10000; h++) {
    const f = f16ToF32(h);
    if (!Number.isNaN(f) && f32ToF16(f) !== h) badF16++;
    const b = bf16ToF32(h);
    if (!Number.isNaN(b) && f32ToBf16(b) !== h) badBf16++;
  }
  t.equal(badF16, 0);
  t.equal(badBf16, 0);
  // Round half to even, as torch does.
  t.equal(f32ToF16(1 + 2 ** -11), 0x3c00, '1 + half ulp rounds to even (down)');
  t.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02, '1 + 1.5 ulp rounds to even (up)');
  t.equal(f32ToF16(70000), 0x7c00, 'overflow → +Inf');
  t.equal(f32ToBf16(1 + 2 ** -8), 0x3f80, 'bf16 tie to even');
});

t.test('sharded checkpoint: index read, and our sharded writer reads back the same tensors', async (t) => {
  const dir = join(PARITY, 'llama/model');
  const tensors = readCheckpointTensors(dir);
  t.ok(tensors.has('lm_head.weight') && tensors.has('model.layers.1.mlp.down_proj.weight'));
  const tmp = mkdtempSync(join(tmpdir(), 'alignd-shards-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const files = writeCheckpointTensors(tmp, tensors, 6000);
  t.ok(files.length > 2 && files.includes('model.safetensors.index.json'), `wrote ${files.join(', ')}`);
  const back = readCheckpointTensors(tmp);
  t.same([...back.keys()].sort(), [...tensors.keys()].sort());
  for (const [name, e] of tensors) t.ok(Buffer.from(back.get(name)!.data).equals(Buffer.from(e.data)), name);
});

t.test('checkpoints in F16 and BF16 read as float32', async (t) => {
  t.equal(readCheckpointTensors(join(PARITY, 'llama3/model')).get('model.embed_tokens.weight')!.dtype, 'F16');
  t.equal(readCheckpointTensors(join(PARITY, 'qwen2/model')).get('model.embed_tokens.weight')!.dtype, 'BF16');
  const x = fromFloat32(Float32Array.from([1.5, -2.25, 3e-8]), [3], 'BF16');
  t.same([...toFloat32(x)], [1.5, -2.25, bf16ToF32(f32ToBf16(3e-8))]);
});

/** The message of the MODEL_INVALID error parsing gives, or "(no error)". */
function parseError(bytes: Uint8Array): string {
  try {
    parseSafetensors(bytes, 'bad.safetensors');
  } catch (err) {
    if (err instanceof AligndError && err.code === 'MODEL_INVALID') return err.message;
    return `(other error: ${String(err)})`;
  }
  return '(no error)';
}

function fileWith(header: unknown, dataBytes: number, padTo8 = true): Uint8Array {
  let json = Buffer.from(JSON.stringify(header));
  if (padTo8) json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

t.test('damaged files fail with a message naming the file and the fault', async (t) => {
  const check = (bytes: Uint8Array, pattern: RegExp, name: string): void => {
    const msg = parseError(bytes);
    t.match(msg, pattern, `${name}: ${msg}`);
    t.match(msg, /bad\.safetensors/, `${name}: names the file`);
  };
  const good = serializeSafetensors({ a: fromFloat32(new Float32Array(4), [2, 2]), b: fromFloat32(new Float32Array(2), [2]) });
  check(good.subarray(0, 5), /shorter than the 8-byte/, 'under 8 bytes');
  check(good.subarray(0, 20), /truncated: header claims/, 'header cut');
  check(good.subarray(0, good.length - 4), /truncated|trailing|holds/, 'data cut');
  check(fileWith({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12),
    /overlaps/, 'overlap');
  check(fileWith({ a: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12), /gap/, 'gap');
  check(fileWith({ a: { dtype: 'Q4', shape: [2], data_offsets: [0, 8] } }, 8), /tensor "a".*dtype.*supported dtypes: .*BF16/, 'bad dtype');
  check(fileWith({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, 8), /holds 8 bytes but F32\[3\] needs 12/, 'shape/size mismatch');
  check(fileWith({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 12), /4 trailing bytes/, 'trailing data');
  check(fileWith({ __metadata__: { n: 1 } }, 0), /__metadata__/, 'non-string metadata');
  const notJson = fileWith({}, 0);
  notJson[8] = 0x7b;
  notJson[9] = 0x22; // '{"' then '}' : unterminated string
  check(notJson, /not valid UTF-8 JSON/, 'bad JSON');
  const huge = new Uint8Array(16);
  new DataView(huge.buffer).setBigUint64(0, 10n ** 12n, true);
  check(huge, /exceeds/, 'absurd header length');
});

t.test('a checkpoint directory without weights says what to do', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'alignd-empty-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  t.throws(() => readCheckpointTensors(tmp), /no model\.safetensors or model\.safetensors\.index\.json.*save_pretrained/);
});

t.test('writer orders tensors as the reference writer does', async (t) => {
  const e = (dtype: TensorEntry['dtype'], n: number): TensorEntry => ({ dtype, shape: [n], data: new Uint8Array(n * ({ F32: 4, F16: 2, I64: 8, U8: 1 } as Record<string, number>)[dtype]!) });
  const bytes = serializeSafetensors({ z: e('U8', 3), b: e('F16', 1), a: e('F32', 2), c: e('I64', 1), aa: e('F32', 1) });
  const names = [...parseSafetensors(bytes).tensors.keys()];
  t.same(names, ['c', 'a', 'aa', 'b', 'z'], 'dtype rank descending, then name');
  t.equal(new DataView(bytes.buffer).getUint32(0, true) % 8, 0, 'header padded to 8');
});

t.test('reading from disk checks the file the same way', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'alignd-st-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const src = readFileSync(join(PARITY, 'mixed.safetensors'));
  const cut = join(tmp, 'cut.safetensors');
  writeFileSync(cut, src.subarray(0, src.length - 3));
  t.throws(() => readSafetensors(cut), /3 trailing|truncated.*cut\.safetensors|ends at/);
  t.throws(() => readSafetensors(join(tmp, 'absent.safetensors')), /cannot read safetensors file.*absent\.safetensors/);
  const whole = readSafetensors(join(PARITY, 'mixed.safetensors'));
  const inMemory = parseSafetensors(new Uint8Array(src));
  for (const [name, e] of inMemory.tensors) t.ok(Buffer.from(whole.tensors.get(name)!.data).equals(Buffer.from(e.data)), name);
});
