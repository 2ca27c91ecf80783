/**
 * Learning-rate schedules as transformers' get_scheduler names them: linear warmup from 0 to the
 * peak over `warmup` steps, then cosine (half period to 0, as get_cosine_schedule_with_warmup),
 * linear decay to 0, or constant. `step` counts from 0 (the first optimizer step).
 */
export function learningRate(step: number, total: number, peak: number, type: 'cosine' | 'linear' | 'constant', warmup: number): number {
  if (step < warmup) return peak * (step + 1) / (warmup + 1);
  if (type === 'constant') return peak;
  const progress = Math.min(1, (step - warmup) / Math.max(1, total - warmup));
  if (type === 'linear') return peak * Math.max(0, 1 - progress);
  return peak * 0.5 * (1 + Math.cos(Math.PI * progress));
}

/**
 * Adaptive KL coefficient (Ziegler et al. 2019, §2.2): e = clip(KL/target − 1, −0.2, 0.2),
 * β ← β·(1 + K_β·e). For DPO-family losses a larger β keeps the policy nearer the reference,
 * so the same sign applies: measured KL over target raises β.
 */
export function adaptBeta(beta: number, kl: number, target: number, kBeta: number): number {
  const e = Math.max(-0.2, Math.min(0.2, kl / target - 1));
  return beta * (1 + kBeta * e);
}
