/**
 * The served KL figure (daemon/loop/served-evidence.ts coarsenedKl): from top-k log-probs of both
 * sides it is the KL of the distributions coarsened to the shared tokens plus one bucket for the
 * rest, so never above the exact KL (log-sum inequality), exact when k covers the vocabulary, and
 * rising towards the exact value as k grows.
 */
import t from 'tap';
import { coarsenedKl } from '../../daemon/loop/served-evidence.js';
import { createRng } from '../../daemon/base/random.js';
import type { PositionLogprobs } from '../../daemon/registry/serving-engine.js';

const V = 50;
function softmaxLog(logits: number[]): number[] {
  const m = Math.max(...logits);
  const z = Math.log(logits.reduce((s, x) => s + Math.exp(x - m), 0)) + m;
  return logits.map((x) => x - z);
}
const exactKl = (lp: number[], lq: number[]): number => lp.reduce((s, x, i) => s + Math.exp(x) * (x - lq[i]!), 0);
/** What a server returns at one position: the top-k of the distribution (and the actual token). */
const served = (lp: number[], k: number, actual: number): PositionLogprobs => ({
  actual: lp[actual]!, top: lp.map((x, i): [number, number] => [i, x]).sort((a, b) => b[1] - a[1]).slice(0, k),
});

t.test('a lower bound of the exact token KL, exact at full vocabulary, tighter as k grows', async (t) => {
  const rng = createRng(11);
  let worstGap = 0;
  for (let trial = 0; trial < 200; trial++) {
    const base = Array.from({ length: V }, () => rng.uniform(-3, 3) * (1 + (trial % 4)));
    const lp = softmaxLog(base.map((x) => x + rng.uniform(-0.5, 0.5)));
    const lq = softmaxLog(base);
    const exact = exactKl(lp, lq);
    let previous = -1;
    for (const k of [1, 5, 20, V]) {
      const bound = coarsenedKl(served(lp, k, 0), served(lq, k, 0));
      if (!(bound <= exact + 1e-9)) t.fail(`trial ${trial} k=${k}: ${bound} > exact ${exact}`);
      if (k === V) worstGap = Math.max(worstGap, Math.abs(bound - exact));
      if (k === 20 || k === V) if (!(bound >= previous - 1e-9)) t.fail(`trial ${trial}: k=${k} gave ${bound} < ${previous} at a smaller k`);
      previous = bound;
    }
  }
  t.ok(worstGap < 1e-9, `exact when k covers the vocabulary (worst gap ${worstGap})`);
  const same = served(softmaxLog([1, 2, 3]), 2, 0);
  t.equal(coarsenedKl(same, same), 0, 'zero for identical distributions');
});
