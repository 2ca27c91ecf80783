/**
 * safetensors reader and writer.
 *
 * Format (huggingface/safetensors README): 8-byte little-endian u64 header length N, N bytes of
 * UTF-8 JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`,
 * then the data buffer; offsets are relative to the buffer, end-exclusive, contiguous, no gaps.
 *
 * The writer reproduces the reference (Rust) writer byte for byte: tensors ordered by dtype rank
 * descending then name ascending (its `prepare` sort), compact JSON with `__metadata__` first
 * (keys in the given order) and omitted when null, header padded with spaces to a multiple of 8 so every tensor's data is aligned.
 *
 * Big checkpoints are read by location (`indexSafetensors`: the header only; the engine
 * memory-maps the data through onnxruntime) and written tensor by tensor in chunks
 * (`writeSafetensorsStreaming`), so no tensor or file has to fit one Node buffer.
 */
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join, dirname, basename } from 'node:path';
import { z } from 'zod';
import { AligndError } from '../base/errors.js';
import { writeFileAtomicDurable } from '../base/fs-durable.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './half.js';

/** Dtypes in the reference crate's enum order (its derived `Ord` drives the writer's sort). */
export const DTYPES = ['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64'] as const;
export type Dtype = (typeof DTYPES)[number];

const BYTES: Record<Dtype, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8,
};

export function dtypeBytes(dtype: Dtype): number {
  return BYTES[dtype];
}

/** One tensor: raw little-endian bytes (a view into the file where possible). */
export interface TensorEntry {
  dtype: Dtype;
  shape: number[];
  data: Uint8Array;
}

export interface SafetensorsContents {
  /** Tensors in file (data offset) order. */
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string> | null;
}

/** Headers beyond this are refused (the reference reader's limit is 100 MB). */
const MAX_HEADER = 100_000_000;

const entrySchema = z.object({
  dtype: z.enum(DTYPES),
  shape: z.array(z.number().int().nonnegative()),
  data_offsets: z.tuple([z.number().int().nonnegative(), z.number().int().nonnegative()]),
}).strict();
const metadataSchema = z.record(z.string(), z.string());

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function invalid(source: string, message: string, cause?: unknown): AligndError {
  return new AligndError('MODEL_INVALID', `safetensors ${message}`, {
    input: source,
    action: 'the file is damaged or not safetensors; re-download or re-export the checkpoint',
    ...(cause === undefined ? {} : { cause }),
  });
}

interface HeaderEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

/** Header length from the first 8 bytes, checked against the file size. */
function headerLength(first8: Uint8Array, fileBytes: number, source: string): number {
  if (fileBytes < 8) throw invalid(source, `file is ${fileBytes} bytes, shorter than the 8-byte header length`);
  const n64 = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER)) throw invalid(source, `header length ${n64} exceeds the ${MAX_HEADER}-byte limit`);
  const n = Number(n64);
  if (8 + n > fileBytes) throw invalid(source, `truncated: header claims ${n} bytes but only ${fileBytes - 8} follow`);
  return n;
}

/** Validate the JSON header against a data buffer of `dataBytes`; entries in offset order. */
function parseHeader(headerBytes: Uint8Array, dataBytes: number, source: string): { entries: HeaderEntry[]; metadata: Record<string, string> | null } {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes));
  } catch (err) {
    throw invalid(source, 'header is not valid UTF-8 JSON', err);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw invalid(source, 'header is not a JSON object');
  let metadata: Record<string, string> | null = null;
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    if (name === '__metadata__') {
      const m = metadataSchema.safeParse(value);
      if (!m.success) throw invalid(source, `__metadata__ must map strings to strings: ${m.error.message}`);
      metadata = m.data;
      continue;
    }
    const e = entrySchema.safeParse(value);
    if (!e.success) {
      const issue = e.error.issues[0];
      const where = issue?.path.join('.') ?? '';
      throw invalid(source, `tensor "${name}" has a bad header entry at ${where || '(root)'}: ${issue?.message ?? e.error.message}`
        + ` (supported dtypes: ${DTYPES.join(', ')})`);
    }
    entries.push({ name, dtype: e.data.dtype, shape: e.data.shape, begin: e.data.data_offsets[0], end: e.data.data_offsets[1] });
  }
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expectedStart = 0;
  for (const e of entries) {
    if (e.begin !== expectedStart) {
      throw invalid(source, e.begin < expectedStart
        ? `tensor "${e.name}" data [${e.begin}, ${e.end}) overlaps the previous tensor (which ends at ${expectedStart})`
        : `gap before tensor "${e.name}": data starts at ${e.begin}, previous ends at ${expectedStart}`);
    }
    if (e.end < e.begin) throw invalid(source, `tensor "${e.name}" has data_offsets end ${e.end} < begin ${e.begin}`);
    const want = numel(e.shape) * BYTES[e.dtype];
    if (e.end - e.begin !== want) {
      throw invalid(source, `tensor "${e.name}" holds ${e.end - e.begin} bytes but ${e.dtype}${JSON.stringify(e.shape)} needs ${want}`);
    }
    if (e.end > dataBytes) throw invalid(source, `truncated: tensor "${e.name}" ends at ${e.end} but the data buffer has ${dataBytes} bytes`);
    expectedStart = e.end;
  }
  if (expectedStart !== dataBytes) throw invalid(source, `${dataBytes - expectedStart} trailing bytes after the last tensor`);
  return { entries, metadata };
}

/** Parse a whole safetensors file held in memory. Tensor data are views into `bytes` (no copy). */
export function parseSafetensors(bytes: Uint8Array, source = '<buffer>'): SafetensorsContents {
  const n = headerLength(bytes.subarray(0, 8), bytes.byteLength, source);
  const buffer = bytes.subarray(8 + n);
  const { entries, metadata } = parseHeader(bytes.subarray(8, 8 + n), buffer.byteLength, source);
  const tensors = new Map<string, TensorEntry>();
  for (const e of entries) tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: buffer.subarray(e.begin, e.end) });
  return { tensors, metadata };
}

/** Where one tensor's bytes are in a file (from the header; the data is not read). */
export interface TensorLocation {
  dtype: Dtype;
  shape: number[];
  /** Absolute or caller-relative path of the file. */
  file: string;
  /** Byte offset of the tensor's first byte in the file. */
  offset: number;
  length: number;
}

function openForRead(path: string): number {
  try {
    return openSync(path, 'r');
  } catch (err) {
    throw new AligndError('MODEL_INVALID', 'cannot read safetensors file', { input: path, action: 'check the path and permissions', cause: err });
  }
}

/** The header of a safetensors file: each tensor's dtype, shape and byte range in the file. */
export function indexSafetensors(path: string): { tensors: Map<string, TensorLocation>; metadata: Record<string, string> | null } {
  const fd = openForRead(path);
  try {
    const size = fstatSync(fd).size;
    const first8 = new Uint8Array(8);
    readSync(fd, first8, 0, Math.min(8, size), 0);
    const n = headerLength(first8, size, path);
    const header = new Uint8Array(n);
    readSync(fd, header, 0, n, 8);
    const { entries, metadata } = parseHeader(header, size - 8 - n, path);
    const tensors = new Map<string, TensorLocation>();
    for (const e of entries) tensors.set(e.name, { dtype: e.dtype, shape: e.shape, file: path, offset: 8 + n + e.begin, length: e.end - e.begin });
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

/** Read `length` bytes at `offset` of an open file into `into` (from `at`); a short file is an error. */
function readFully(fd: number, into: Uint8Array, at: number, length: number, offset: number, source: string): void {
  let done = 0;
  while (done < length) {
    const got = readSync(fd, into, at + done, length - done, offset + done);
    if (got === 0) throw invalid(source, `truncated: wanted ${length} bytes at offset ${offset}`);
    done += got;
  }
}

/** One tensor's bytes (in its own buffer, so its data is aligned). For tensors that fit a Node buffer. */
export function readTensorBytes(t: TensorLocation): Uint8Array {
  const fd = openForRead(t.file);
  try {
    const data = new Uint8Array(t.length);
    readFully(fd, data, 0, t.length, t.offset, t.file);
    return data;
  } finally {
    closeSync(fd);
  }
}

/** Visit a tensor's bytes in chunks of at most `chunkBytes` (whole elements): for tensors of any size. */
export function forEachChunk(t: TensorLocation, chunkBytes: number, visit: (bytes: Uint8Array, byteOffset: number) => void): void {
  const el = BYTES[t.dtype];
  const size = Math.max(el, Math.floor(chunkBytes / el) * el);
  const buf = new Uint8Array(Math.min(size, t.length));
  const fd = openForRead(t.file);
  try {
    for (let at = 0; at < t.length; at += size) {
      const n = Math.min(size, t.length - at);
      readFully(fd, buf, 0, n, t.offset + at, t.file);
      visit(buf.subarray(0, n), at);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Read a safetensors file tensor by tensor (each into its own aligned buffer), so files larger
 * than one Node buffer can hold still load and F32 data decode without a copy.
 */
export function readSafetensors(path: string): SafetensorsContents {
  const { tensors, metadata } = indexSafetensors(path);
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of tensors) out.set(name, { dtype: t.dtype, shape: t.shape, data: readTensorBytes(t) });
  return { tensors: out, metadata };
}

/** Decode any floating or integer tensor to float32. F32 is a zero-copy view when aligned. */
export function toFloat32(t: TensorEntry): Float32Array {
  const n = numel(t.shape);
  const { data } = t;
  if (t.dtype === 'F32') {
    if (data.byteOffset % 4 === 0) return new Float32Array(data.buffer, data.byteOffset, n);
    return new Float32Array(data.slice().buffer);
  }
  const out = new Float32Array(n);
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  switch (t.dtype) {
    case 'F16': for (let i = 0; i < n; i++) out[i] = f16ToF32(dv.getUint16(2 * i, true)); break;
    case 'BF16': for (let i = 0; i < n; i++) out[i] = bf16ToF32(dv.getUint16(2 * i, true)); break;
    case 'F64': for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true); break;
    case 'I64': for (let i = 0; i < n; i++) out[i] = Number(dv.getBigInt64(8 * i, true)); break;
    case 'U64': for (let i = 0; i < n; i++) out[i] = Number(dv.getBigUint64(8 * i, true)); break;
    case 'I32': for (let i = 0; i < n; i++) out[i] = dv.getInt32(4 * i, true); break;
    case 'U32': for (let i = 0; i < n; i++) out[i] = dv.getUint32(4 * i, true); break;
    case 'I16': for (let i = 0; i < n; i++) out[i] = dv.getInt16(2 * i, true); break;
    case 'U16': for (let i = 0; i < n; i++) out[i] = dv.getUint16(2 * i, true); break;
    case 'I8': for (let i = 0; i < n; i++) out[i] = dv.getInt8(i); break;
    case 'U8': case 'BOOL': for (let i = 0; i < n; i++) out[i] = data[i]!; break;
    default:
      throw new AligndError('MODEL_UNSUPPORTED', `cannot convert dtype ${t.dtype} to float32`, {
        action: 'convert the checkpoint to F32, F16 or BF16',
      });
  }
  return out;
}

/** Encode float32 values as a tensor of a float dtype (round to nearest even for F16/BF16). */
export function fromFloat32(values: Float32Array, shape: number[], dtype: 'F32' | 'F16' | 'BF16' | 'F64' = 'F32'): TensorEntry {
  if (numel(shape) !== values.length) {
    throw new AligndError('INTERNAL', `tensor shape ${JSON.stringify(shape)} does not match ${values.length} values`);
  }
  if (dtype === 'F32') return { dtype, shape, data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength) };
  const out = new Uint8Array(values.length * BYTES[dtype]);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (dtype === 'F16') dv.setUint16(2 * i, f32ToF16(v), true);
    else if (dtype === 'BF16') dv.setUint16(2 * i, f32ToBf16(v), true);
    else dv.setFloat64(8 * i, v, true);
  }
  return { dtype, shape, data: out };
}

const RANK = new Map<Dtype, number>(DTYPES.map((d, i) => [d, i]));

/** A tensor to write: name, dtype and shape (its bytes come separately). */
export interface TensorSpec { name: string; dtype: Dtype; shape: number[] }

/** The reference writer's order and header: tensors sorted, the 8-byte length + padded JSON, each tensor's offset in the data. */
function layout(tensors: TensorSpec[], metadata: Record<string, string> | null): { order: TensorSpec[]; head: Uint8Array; dataBytes: number } {
  const order = [...tensors].sort((a, b) => (RANK.get(b.dtype)! - RANK.get(a.dtype)!) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata !== null) {
    // Kept in the given order: the reference writer holds metadata in a hash map (arbitrary order
    // for more than one key), so a parsed file re-serializes to its own bytes this way.
    header['__metadata__'] = { ...metadata };
  }
  let offset = 0;
  for (const t of order) {
    if (t.name === '__metadata__') throw new AligndError('INTERNAL', 'a tensor may not be named "__metadata__"');
    const want = numel(t.shape) * BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + want] };
    offset += want;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.byteLength % 8)) % 8;
  if (pad > 0) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const head = new Uint8Array(8 + json.byteLength);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  head.set(json, 8);
  return { order, head, dataBytes: offset };
}

/** Serialize as the reference writer does (see file comment). */
export function serializeSafetensors(tensors: Map<string, TensorEntry> | Record<string, TensorEntry>,
  metadata: Record<string, string> | null = null): Uint8Array {
  const byName = new Map(tensors instanceof Map ? tensors.entries() : Object.entries(tensors));
  for (const [name, t] of byName) {
    const want = numel(t.shape) * BYTES[t.dtype];
    if (t.data.byteLength !== want) {
      throw new AligndError('INTERNAL', `tensor "${name}" has ${t.data.byteLength} bytes but ${t.dtype}${JSON.stringify(t.shape)} needs ${want}`);
    }
  }
  const { order, head, dataBytes } = layout([...byName].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })), metadata);
  const out = new Uint8Array(head.byteLength + dataBytes);
  out.set(head, 0);
  let at = head.byteLength;
  for (const t of order) {
    const data = byName.get(t.name)!.data;
    out.set(data, at);
    at += data.byteLength;
  }
  return out;
}

/**
 * Write a safetensors file of any size, byte-identical to serializeSafetensors: `fill(t, chunk,
 * byteOffset)` fills each chunk (at most `chunkBytes`, whole elements) of tensor t's data, in
 * order. Written to a temporary file and renamed.
 */
export function writeSafetensorsStreaming(path: string, tensors: TensorSpec[], fill: (t: TensorSpec, chunk: Uint8Array, byteOffset: number) => void,
  metadata: Record<string, string> | null = null, chunkBytes = 16 * 2 ** 20): void {
  const { order, head } = layout(tensors, metadata);
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w');
  const buf = new Uint8Array(chunkBytes);
  try {
    let pos = 0;
    const put = (bytes: Uint8Array): void => {
      let done = 0;
      while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done, pos + done);
      pos += bytes.byteLength;
    };
    put(head);
    for (const t of order) {
      const el = BYTES[t.dtype];
      const size = Math.max(el, Math.floor(chunkBytes / el) * el);
      const total = numel(t.shape) * el;
      for (let at = 0; at < total; at += size) {
        const chunk = buf.subarray(0, Math.min(size, total - at));
        fill(t, chunk, at);
        put(chunk);
      }
    }
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export function writeSafetensors(path: string, tensors: Map<string, TensorEntry> | Record<string, TensorEntry>,
  metadata: Record<string, string> | null = null): void {
  writeFileAtomicDurable(path, serializeSafetensors(tensors, metadata));
}

const indexSchema = z.object({
  metadata: z.record(z.string(), z.unknown()).optional(),
  weight_map: z.record(z.string(), z.string()),
});

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

/**
 * Where every tensor of a checkpoint directory is: `model.safetensors`, or the shards listed by
 * `model.safetensors.index.json` (each shard's header read once; a name the index maps to a shard
 * that lacks it is an error). Reads headers only.
 */
export function indexCheckpointTensors(dir: string): Map<string, TensorLocation> {
  const indexPath = join(dir, INDEX_FILE);
  if (existsSync(indexPath)) {
    let index: z.infer<typeof indexSchema>;
    try {
      index = indexSchema.parse(JSON.parse(readFileSync(indexPath, 'utf8')));
    } catch (err) {
      throw new AligndError('MODEL_INVALID', 'sharded checkpoint index is not valid', {
        input: indexPath, action: 'the index must be {"metadata": {...}, "weight_map": {tensor: shard file}}', cause: err,
      });
    }
    const shards = new Map<string, Map<string, TensorLocation>>();
    const out = new Map<string, TensorLocation>();
    for (const [name, file] of Object.entries(index.weight_map)) {
      if (file.includes('/') || file.includes('\\')) {
        throw new AligndError('MODEL_INVALID', `index maps "${name}" to "${file}", outside the checkpoint directory`, { input: indexPath, action: 'shard names must be plain file names' });
      }
      let shard = shards.get(file);
      if (shard === undefined) {
        shard = indexSafetensors(join(dir, file)).tensors;
        shards.set(file, shard);
      }
      const t = shard.get(name);
      if (t === undefined) {
        throw new AligndError('MODEL_INVALID', `index maps tensor "${name}" to shard ${file}, which does not contain it`, {
          input: indexPath, action: 're-export the checkpoint or fix model.safetensors.index.json',
        });
      }
      out.set(name, t);
    }
    return out;
  }
  const single = join(dir, SINGLE_FILE);
  if (!existsSync(single)) {
    throw new AligndError('MODEL_INVALID', `no ${SINGLE_FILE} or ${INDEX_FILE} in the checkpoint directory`, {
      input: dir, action: 'point the policy at a Hugging Face checkpoint directory saved with safetensors (save_pretrained(safe_serialization=True))',
    });
  }
  return indexSafetensors(single).tensors;
}

/** Every tensor of a checkpoint directory with its bytes (small checkpoints; see indexCheckpointTensors). */
export function readCheckpointTensors(dir: string): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  for (const [name, t] of indexCheckpointTensors(dir)) out.set(name, { dtype: t.dtype, shape: t.shape, data: readTensorBytes(t) });
  return out;
}

/**
 * Write a checkpoint as shards of at most `maxShardBytes` each plus the index, named as
 * transformers names them (`model-00001-of-00002.safetensors`); one shard → `model.safetensors`.
 */
export function writeCheckpointTensors(dir: string, tensors: Map<string, TensorEntry>, maxShardBytes = Infinity,
  metadata: Record<string, string> | null = { format: 'pt' }): string[] {
  const shards: Array<Map<string, TensorEntry>> = [];
  let current = new Map<string, TensorEntry>();
  let size = 0;
  let total = 0;
  for (const [name, t] of tensors) {
    if (size + t.data.byteLength > maxShardBytes && current.size > 0) {
      shards.push(current);
      current = new Map();
      size = 0;
    }
    current.set(name, t);
    size += t.data.byteLength;
    total += t.data.byteLength;
  }
  if (current.size > 0 || shards.length === 0) shards.push(current);
  if (shards.length === 1) {
    writeSafetensors(join(dir, SINGLE_FILE), shards[0]!, metadata);
    return [SINGLE_FILE];
  }
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => {
    const file = `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    writeSafetensors(join(dir, file), shard, metadata);
    for (const name of shard.keys()) weightMap[name] = file;
    files.push(file);
  });
  const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  writeFileAtomicDurable(join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total }, weight_map: sortedMap }, null, 2) + '\n');
  return [...files, INDEX_FILE];
}
