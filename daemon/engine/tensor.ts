/**
 * Host tensors: element types, typed-array storage, and helpers to make them.
 * These are what the graph builder stores for constants and frozen weights, and what the runtime
 * feeds to and reads from onnxruntime.
 */
import { AligndError } from '../base/errors.js';

export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'bool';

export type TensorData = Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;

/**
 * A tensor in host memory. float16 and bfloat16 are stored as their raw 16 bits in a Uint16Array
 * (bfloat16 exists for frozen weights: onnxruntime-node cannot feed or return it).
 */
export interface HostTensor {
  dtype: DType;
  dims: number[];
  data: TensorData;
}

/** ONNX TensorProto.DataType codes (onnx.proto). */
export const onnxType: Record<DType, number> = {
  float32: 1, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11, bfloat16: 16,
};

export const bytesPerElement: Record<DType, number> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, bool: 1,
};

export const isFloat = (d: DType): boolean => d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';

/** Half-precision storage types (2 bytes per element). */
export const isHalf = (d: DType): boolean => d === 'float16' || d === 'bfloat16';

export function sizeOf(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** Make a host tensor of `dtype` from plain numbers (or a typed array of the right kind). */
export function tensor(dtype: DType, dims: number[], values: ArrayLike<number> | TensorData): HostTensor {
  const n = sizeOf(dims);
  if (values.length !== n) {
    throw new AligndError('ENGINE_INVALID_GRAPH', `tensor has ${values.length} values but dims [${dims}] need ${n}`,
      { action: 'pass as many values as the product of the dims' });
  }
  return { dtype, dims: [...dims], data: toTyped(dtype, values) };
}

function toTyped(dtype: DType, values: ArrayLike<number> | TensorData): TensorData {
  switch (dtype) {
    case 'float32': return values instanceof Float32Array ? values : Float32Array.from(values as ArrayLike<number>, Number);
    case 'float64': return values instanceof Float64Array ? values : Float64Array.from(values as ArrayLike<number>, Number);
    case 'int32': return values instanceof Int32Array ? values : Int32Array.from(values as ArrayLike<number>, Number);
    case 'bool': return values instanceof Uint8Array ? values : Uint8Array.from(values as ArrayLike<number>, (v) => (Number(v) ? 1 : 0));
    case 'int64': return values instanceof BigInt64Array ? values
      : BigInt64Array.from(values as ArrayLike<number>, (v) => BigInt(Math.trunc(Number(v))));
    case 'float16': return values instanceof Uint16Array ? values
      : Uint16Array.from(values as ArrayLike<number>, (v) => toHalf(Number(v)));
    case 'bfloat16': return values instanceof Uint16Array ? values
      : Uint16Array.from(values as ArrayLike<number>, (v) => toBfloat16(Number(v)));
  }
}

/** Float values of any float/int host tensor as a Float64Array (float16 decoded). */
export function toFloat64(t: HostTensor): Float64Array {
  if (t.dtype === 'float16') return Float64Array.from(t.data as Uint16Array, fromHalf);
  if (t.dtype === 'bfloat16') return Float64Array.from(t.data as Uint16Array, fromBfloat16);
  if (t.dtype === 'int64') return Float64Array.from(t.data as BigInt64Array, Number);
  return Float64Array.from(t.data as ArrayLike<number>);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE 754 binary32 → binary16 bits, round to nearest even; overflow → ±Inf, NaN kept. */
export function toHalf(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  e = half;
  return sign | e;
}

export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** bfloat16 bits → number: the bits are the high half of a binary32. */
export function fromBfloat16(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

/** number → bfloat16 bits, round to nearest even (as torch's `.to(torch.bfloat16)`); NaN stays a quiet NaN. */
export function toBfloat16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  const lsb = (x >>> 16) & 1;
  return ((x + 0x7fff + lsb) >>> 16) & 0xffff;
}

/** Little-endian raw bytes of a tensor, as TensorProto.raw_data wants them. */
export function rawBytes(t: HostTensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

import { mulberry32 } from '../base/random.js';

/** Uniform values in [lo, hi) from a seeded generator. */
export function randomTensor(dtype: DType, dims: number[], seed: number, lo = -1, hi = 1): HostTensor {
  const r = mulberry32(seed).next;
  const n = sizeOf(dims);
  const v = new Array<number>(n);
  for (let i = 0; i < n; i++) v[i] = lo + (hi - lo) * r();
  return tensor(dtype, dims, v);
}
