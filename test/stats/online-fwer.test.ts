/**
 * The online fallback procedure (Tian & Ramdas 2021): levels by the formula, and the familywise
 * error over long sequences of rounds, simulated with dependent p-values (no timing).
 */
import t from 'tap';
import { alphaOf, gamma, nextLevel, type FallbackEntry } from '../../daemon/stats/online-fwer.js';
import { createRng } from '../../daemon/base/random.js';
import { normalCdf } from '../../daemon/stats/normal.js';

t.test('levels: γ_k = 1/(k(k+1)), a rejection carries its level to the next round', async (t) => {
  let s = 0;
  for (let k = 1; k <= 100_000; k++) s += gamma(k);
  t.ok(Math.abs(s - (1 - 1 / 100_001)) < 1e-9, 'Σγ telescopes to 1');
  t.equal(alphaOf(0.95), 0.05);
  const l1 = nextLevel(0.05, null);
  t.same(l1, { k: 1, alpha: 0.025, carried: 0 });
  const l2 = nextLevel(0.05, { ...l1, rejected: true });
  t.same(l2, { k: 2, alpha: 0.05 / 6 + 0.025, carried: 0.025 });
  const l3 = nextLevel(0.05, { ...l2, rejected: false });
  t.same(l3, { k: 3, alpha: 0.05 / 12, carried: 0 });
  t.throws(() => gamma(0));
  t.throws(() => nextLevel(1, null));
});

t.test('FWER ≤ α over 50 rounds, nulls and non-nulls interleaved, p-values dependent across rounds', async (t) => {
  const rng = createRng(17);
  const alpha = 0.05;
  const runs = 20_000;
  let anyFalse = 0, trueRejections = 0;
  for (let r = 0; r < runs; r++) {
    let prev: FallbackEntry | null = null;
    let falseHere = false;
    const shared = rng.normal(); // a common shock: every round's evidence is correlated
    for (let k = 0; k < 50; k++) {
      const isNull = k % 3 !== 0; // every third candidate is truly better
      const z = 0.7 * shared + Math.sqrt(1 - 0.49) * rng.normal() + (isNull ? 0 : 3.5);
      const p = normalCdf(-z); // one-sided p-value
      const level = nextLevel(alpha, prev);
      const rejected = p <= level.alpha;
      if (rejected && isNull) falseHere = true;
      if (rejected && !isNull) trueRejections++;
      prev = { ...level, rejected };
    }
    if (falseHere) anyFalse++;
  }
  const fwer = anyFalse / runs;
  t.ok(fwer <= alpha, `familywise error ${fwer} ≤ ${alpha}`);
  t.ok(trueRejections / (runs * 17) > 0.3, `power kept: ${(trueRejections / (runs * 17)).toFixed(3)} of true improvements pass`);
});
