/**
 * IEEE-754 binary16 (F16) and bfloat16 (BF16) <-> float32 conversions, bit-exact.
 * Float→half rounds to nearest, ties to even, as torch's `.to(torch.float16/bfloat16)` does.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

// IEEE binary16 conversions are the engine's (one implementation, round half to even).
export { fromHalf as f16ToF32, toHalf as f32ToF16 } from '../engine/tensor.js';

export function bf16ToF32(b: number): number {
  u32[0] = (b & 0xffff) << 16;
  return f32[0]!;
}

export function f32ToBf16(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff; // quiet NaN
  const lsb = (x >>> 16) & 1;
  return ((x + 0x7fff + lsb) >>> 16) & 0xffff;
}
