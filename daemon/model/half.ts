/**
 * IEEE-754 binary16 (F16) and bfloat16 (BF16) <-> float32 conversions, bit-exact.
 * Float→half rounds to nearest, ties to even, as torch's `.to(torch.float16/bfloat16)` does.
 */

// One implementation of each conversion: the engine's (round half to even).
export { fromHalf as f16ToF32, toHalf as f32ToF16, fromBfloat16 as bf16ToF32, toBfloat16 as f32ToBf16 } from '../engine/tensor.js';
