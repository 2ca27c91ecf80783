/**
 * Where a model's weights live for its programs. Every program of a model references the same
 * files as ONNX external data, which onnxruntime memory-maps, so the base weights are in memory
 * once however many programs (sessions) a round opens (daemon/engine/README.md).
 *
 * The checkpoint's own safetensors files are used in place whenever every weight is F32, F16 or
 * BF16 at an offset aligned to its element size: nothing is copied or converted, and half-precision
 * checkpoints stay half (the graphs widen one weight at a time). Otherwise (F64 or integer
 * weights, a misaligned tensor, or `storage: 'float16'` asked for an F32 checkpoint) the weights
 * are converted once, tensor by tensor in chunks, into one file of a folder of their own.
 */
import { closeSync, mkdirSync, mkdtempSync, openSync, renameSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { AligndError } from '../base/errors.js';
import { type DType, toHalf } from '../engine/index.js';
import type { ModelSpec } from './hf-config.js';
import { type Dtype, dtypeBytes, forEachChunk, numel, toFloat32, type TensorLocation } from './safetensors.js';
import type { CheckpointWeights } from './weights.js';

export interface GraphWeights {
  spec: ModelSpec;
  /** HF name → where the weight's bytes are (all under `dir`). */
  tensors: CheckpointWeights;
  /** The folder programs resolve the weights' files in (onnxruntime confines external data to it). */
  dir: string;
}

export interface WeightFileOptions {
  /** Store F32 weights as float16 (half the memory; arithmetic stays float32). */
  storage?: 'float16';
  /** Folder for converted weights (default: a fresh folder under the system temp dir). */
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
  if ([...weights.values()].every((t) => usableInPlace(t, dir, opts.storage))) return { spec, tensors: weights, dir };
  const out = opts.dir === undefined ? mkdtempSync(join(tmpdir(), 'alignd-weights-')) : resolve(opts.dir);
  mkdirSync(out, { recursive: true });
  return { spec, tensors: convertWeights(weights, join(out, 'weights.bin'), opts.storage), dir: out };
}

/** Write every weight into `file` (converted where it cannot be read in place); their new locations. */
function convertWeights(weights: CheckpointWeights, file: string, storage: WeightFileOptions['storage']): CheckpointWeights {
  const placed: CheckpointWeights = new Map();
  let end = 0;
  // Misaligned F32/F16/BF16 tensors are copied as they are; F32 becomes F16 when asked; the rest F32.
  const target = (t: TensorLocation): Dtype => (storage === 'float16' && t.dtype === 'F32' ? 'F16' : GRAPH_DTYPE[t.dtype] !== undefined ? t.dtype : 'F32');
  for (const [name, t] of weights) {
    const dtype = target(t);
    const offset = Math.ceil(end / ALIGN) * ALIGN;
    const length = numel(t.shape) * dtypeBytes(dtype);
    placed.set(name, { dtype, shape: t.shape, file, offset, length });
    end = offset + length;
  }
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
    throw new AligndError('MODEL_INVALID', `could not write the converted weights: ${(err as Error).message}`, {
      input: file, action: 'check free disk space and permissions of the weights folder (engine programDir)', cause: err,
    });
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  return placed;
}

function convertChunk(bytes: Uint8Array, from: Dtype, to: Dtype): Uint8Array {
  if (from === to) return bytes;
  const values = toFloat32({ dtype: from, shape: [bytes.byteLength / dtypeBytes(from)], data: bytes });
  if (to === 'F32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const half = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) half[i] = toHalf(values[i]!);
  return new Uint8Array(half.buffer);
}

/** The external-data reference of a weight for a graph: its file relative to the weights folder. */
export function externalRef(w: GraphWeights, t: TensorLocation): { dir: string; location: string; offset: number; length: number } {
  return { dir: w.dir, location: relative(w.dir, resolve(t.file)), offset: t.offset, length: t.length };
}
