/**
 * Where a model's weights live for its programs. Every program of a model references the same
 * files as ONNX external data, which onnxruntime memory-maps, so the base weights are in memory
 * once however many programs (sessions) a round opens (daemon/engine/README.md).
 *
 * The checkpoint's own safetensors files are used in place whenever every weight is F32, F16 or
 * BF16 at an offset aligned to its element size: nothing is copied or converted, and half-precision
 * checkpoints stay half (the graphs widen one weight at a time). Otherwise (F64 or integer
 * weights, a misaligned tensor, or `storage: 'float16'` asked for an F32 checkpoint) the weights
 * are converted once, tensor by tensor in chunks, into one file of a folder of their own:
 *   - with `dir` (the daemon passes <data-dir>/weights): `dir/<key>`, the key a hash of the source
 *     tensors (files with size and mtime, offsets, types) and the storage, so a restart reuses the
 *     conversion and a changed checkpoint gets a new one; alignd never deletes these;
 *   - without: a temporary folder of this process, removed by `dispose()` (Model.close) or at
 *     process exit; folders left by a killed process are removed by the next conversion.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { AligndError } from '../base/errors.js';
import { type DType, toHalf } from '../engine/index.js';
import type { ModelSpec } from './hf-config.js';
import { type Dtype, dtypeBytes, forEachChunk, numel, toFloat32, type TensorLocation } from './safetensors.js';
import type { CheckpointWeights } from './weights.js';
import { processAlive } from '../base/process.js';

export interface GraphWeights {
  spec: ModelSpec;
  /** HF name → where the weight's bytes are (all under `dir`). */
  tensors: CheckpointWeights;
  /** The folder programs resolve the weights' files in (onnxruntime confines external data to it). */
  dir: string;
  /** Remove converted weights held in a temporary folder (a no-op for in-place and `dir` weights). */
  dispose(): void;
}

export interface WeightFileOptions {
  /** Store F32 weights as float16 (half the memory; arithmetic stays float32). */
  storage?: 'float16';
  /** Folder for converted weights, reused by content key (default: a temporary folder of this process). */
  dir?: string;
}

/** Engine element type of a safetensors dtype that programs read in place. */
export const GRAPH_DTYPE: Partial<Record<Dtype, DType>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

const CHUNK = 16 * 2 ** 20;
const ALIGN = 4096;

function usableInPlace(t: TensorLocation, dir: string, storage: WeightFileOptions['storage']): boolean {
  if (GRAPH_DTYPE[t.dtype] === undefined) return false;
  if (storage === 'float16' && t.dtype === 'F32') return false;
  return t.offset % dtypeBytes(t.dtype) === 0 && resolve(dirname(t.file)) === dir;
}

/** The weights of a checkpoint in `checkpointDir` as programs read them (see the file comment). */
export function graphWeights(spec: ModelSpec, weights: CheckpointWeights, checkpointDir: string, opts: WeightFileOptions = {}): GraphWeights {
  const dir = resolve(checkpointDir);
  if ([...weights.values()].every((t) => usableInPlace(t, dir, opts.storage))) return { spec, tensors: weights, dir, dispose: () => {} };
  if (opts.dir !== undefined) {
    const out = join(resolve(opts.dir), conversionKey(weights, opts.storage));
    mkdirSync(out, { recursive: true });
    const file = join(out, 'weights.bin');
    const placed = placeWeights(weights, file, opts.storage);
    // The file is renamed into place only when complete, so an existing one of the right size is a finished conversion.
    if (!(existsSync(file) && statSync(file).size === fileEnd(placed))) writeConverted(weights, placed, file);
    return { spec, tensors: placed, dir: out, dispose: () => {} };
  }
  sweepTemporary();
  const out = mkdtempSync(join(tmpdir(), `${TEMP_PREFIX}${process.pid}-`));
  temporary.add(out);
  const file = join(out, 'weights.bin');
  const placed = placeWeights(weights, file, opts.storage);
  try {
    writeConverted(weights, placed, file);
  } catch (err) {
    removeTemporary(out);
    throw err;
  }
  return { spec, tensors: placed, dir: out, dispose: () => removeTemporary(out) };
}

/** Temporary weight folders are named <prefix><pid>-<random> under the system temp dir. */
const TEMP_PREFIX = 'alignd-weights-';
const temporary = new Set<string>();
let exitHook = false;

function removeTemporary(folder: string): void {
  temporary.delete(folder);
  rmSync(folder, { recursive: true, force: true });
}

/** Remove this process's temporary folders at exit, and those of processes that no longer run (killed before their exit hook). */
function sweepTemporary(): void {
  if (!exitHook) {
    exitHook = true;
    process.on('exit', () => { for (const f of [...temporary]) removeTemporary(f); });
  }
  for (const name of readdirSync(tmpdir())) {
    const pid = Number(/^alignd-weights-(\d+)-/.exec(name)?.[1] ?? NaN);
    if (Number.isInteger(pid) && pid !== process.pid && !processAlive(pid)) rmSync(join(tmpdir(), name), { recursive: true, force: true });
  }
}

/** What a conversion depends on: every source tensor (its file's identity, size and mtime, its place and type) and the storage. */
function conversionKey(weights: CheckpointWeights, storage: WeightFileOptions['storage']): string {
  const h = createHash('sha256').update(JSON.stringify({ storage: storage ?? null, format: 1 }));
  const files = new Map<string, string>();
  for (const [name, t] of weights) {
    const file = resolve(t.file);
    if (!files.has(file)) {
      const st = statSync(file);
      files.set(file, JSON.stringify([file, st.size, st.mtimeMs, st.ino]));
    }
    h.update(JSON.stringify([name, t.dtype, t.shape, t.offset, t.length, files.get(file)]));
  }
  return h.digest('hex').slice(0, 24);
}

/** Where each weight goes in the converted file (F32 becomes F16 when asked, F64 and integers F32, the rest as they are). */
function placeWeights(weights: CheckpointWeights, file: string, storage: WeightFileOptions['storage']): CheckpointWeights {
  const placed: CheckpointWeights = new Map();
  let end = 0;
  const target = (t: TensorLocation): Dtype => (storage === 'float16' && t.dtype === 'F32' ? 'F16' : GRAPH_DTYPE[t.dtype] !== undefined ? t.dtype : 'F32');
  for (const [name, t] of weights) {
    const dtype = target(t);
    const offset = Math.ceil(end / ALIGN) * ALIGN;
    const length = numel(t.shape) * dtypeBytes(dtype);
    placed.set(name, { dtype, shape: t.shape, file, offset, length });
    end = offset + length;
  }
  return placed;
}

const fileEnd = (placed: CheckpointWeights): number => Math.max(0, ...[...placed.values()].map((t) => t.offset + t.length));

/** Write every weight at its place in `file` (through a temporary name, renamed when complete). */
function writeConverted(weights: CheckpointWeights, placed: CheckpointWeights, file: string): void {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w');
  try {
    for (const [name, t] of weights) {
      const to = placed.get(name)!;
      forEachChunk(t, CHUNK, (bytes, at) => {
        const converted = convertChunk(bytes, t.dtype, to.dtype);
        const pos = to.offset + (at / dtypeBytes(t.dtype)) * dtypeBytes(to.dtype);
        let done = 0;
        while (done < converted.byteLength) done += writeSync(fd, converted, done, converted.byteLength - done, pos + done);
      });
    }
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw new AligndError('MODEL_INVALID', `could not write the converted weights: ${(err as Error).message}`, {
      input: file, action: 'check free disk space and permissions of the weights folder (the data dir, or the system temp dir)', cause: err,
    });
  }
  closeSync(fd);
  renameSync(tmp, file);
}

function convertChunk(bytes: Uint8Array, from: Dtype, to: Dtype): Uint8Array {
  if (from === to) return bytes;
  const values = toFloat32({ dtype: from, shape: [bytes.byteLength / dtypeBytes(from)], data: bytes });
  if (to === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const half = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) half[i] = toHalf(values[i]!);
  return new Uint8Array(half.buffer);
}

/** Bytes of the float32 matrices programs read as constants: what prepacking copies into each session (half weights are widened at run time, never packed). */
export function packableBytes(w: GraphWeights): number {
  let n = 0;
  for (const t of w.tensors.values()) if (t.dtype === 'F32' && t.shape.length >= 2) n += t.length;
  return n;
}

/** The external-data reference of a weight for a graph: its file relative to the weights folder. */
export function externalRef(w: GraphWeights, t: TensorLocation): { dir: string; location: string; offset: number; length: number } {
  return { dir: w.dir, location: relative(w.dir, resolve(t.file)), offset: t.offset, length: t.length };
}
