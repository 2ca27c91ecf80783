/**
 * Next-token choice from one row of logits: greedy, or temperature + top-p (nucleus, Holtzman
 * et al., 2020) sampling with a seeded RNG, in the order transformers' logits processors apply
 * them (temperature, then top-p). Runs in TypeScript on the last position's logits, whatever
 * produced them (the ONNX generation program, or the reference forward).
 */
import { AligndError } from '../base/errors.js';
import type { Rng } from '../base/random.js';

export interface SamplingOptions {
  /** 0 → greedy (argmax, first index on ties). */
  temperature: number;
  /** Keep the smallest set of most likely tokens whose probability reaches topP; 1 keeps all. */
  topP: number;
}

export const GREEDY: SamplingOptions = { temperature: 0, topP: 1 };

export function argmax(logits: ArrayLike<number>, offset = 0, length = logits.length - offset): number {
  let best = 0;
  for (let i = 1; i < length; i++) if (logits[offset + i]! > logits[offset + best]!) best = i;
  return best;
}

/**
 * Probabilities after temperature and top-p (zeros outside the nucleus), renormalised.
 * As transformers' TopPLogitsWarper: tokens are kept from the most likely down until the
 * cumulative probability reaches topP, the token that crosses it included, at least one kept.
 */
export function samplingDistribution(logits: ArrayLike<number>, opts: SamplingOptions, offset = 0, length = logits.length - offset): Float64Array {
  if (!(opts.temperature > 0)) throw new AligndError('INTERNAL', 'samplingDistribution needs temperature > 0 (use argmax for greedy)');
  if (!(opts.topP > 0 && opts.topP <= 1)) {
    throw new AligndError('CONFIG_INVALID', `top_p must be in (0, 1], got ${opts.topP}`, { action: 'set top_p to e.g. 0.9, or 1 to disable' });
  }
  const p = new Float64Array(length);
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, logits[offset + i]! / opts.temperature);
  let z = 0;
  for (let i = 0; i < length; i++) {
    p[i] = Math.exp(logits[offset + i]! / opts.temperature - max);
    z += p[i]!;
  }
  for (let i = 0; i < length; i++) p[i] = p[i]! / z;
  if (opts.topP >= 1) return p;
  const order = Array.from({ length }, (_, i) => i).sort((a, b) => p[b]! - p[a]! || a - b);
  let cum = 0;
  let kept = 0;
  for (const i of order) {
    if (kept > 0 && cum >= opts.topP) p[i] = 0;
    else {
      cum += p[i]!;
      kept++;
    }
  }
  let s = 0;
  for (let i = 0; i < length; i++) s += p[i]!;
  for (let i = 0; i < length; i++) p[i] = p[i]! / s;
  return p;
}

/** Choose the next token id. Greedy when temperature is 0. */
export function sampleToken(logits: ArrayLike<number>, opts: SamplingOptions, rng: Rng, offset = 0, length = logits.length - offset): number {
  if (opts.temperature === 0) return argmax(logits, offset, length);
  if (!(opts.temperature > 0)) {
    throw new AligndError('CONFIG_INVALID', `temperature must be ≥ 0, got ${opts.temperature}`, { action: 'set temperature to 0 (greedy) or e.g. 0.7' });
  }
  const p = samplingDistribution(logits, opts, offset, length);
  const u = rng.next();
  let cum = 0;
  let last = 0;
  for (let i = 0; i < length; i++) {
    if (p[i]! === 0) continue;
    cum += p[i]!;
    last = i;
    if (u < cum) return i;
  }
  return last; // u within rounding of 1
}
