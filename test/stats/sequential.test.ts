/**
 * Known properties of the anytime-valid statistics (daemon/stats/), checked by simulation with
 * seeded streams: a confidence sequence covers the true mean at every sample size at once with
 * probability ≥ 1 − α (the whole path, read after every observation), a sequential test at its
 * null boundary rejects at some point of a long path with probability ≤ α, the same tests find a
 * real difference, and the paired difference of two interleaved streams keeps these guarantees.
 * Counts of streams, not clocks: nothing here depends on how fast the machine is.
 */
import t, { type Test } from 'tap';
import { createRng, type Rng } from '../../daemon/base/random.js';
import { bettingConfidenceSequence, sequentialMeanTest } from '../../daemon/stats/confidence-sequence.js';
import { arrivalPairing, differenceToUnit, unitToDifference } from '../../daemon/stats/pairing.js';
import { logRateEvidence, rateExceeds } from '../../daemon/stats/rate-evidence.js';
import { clopperPearson } from '../../daemon/stats/binomial.js';

const bernoulli = (rng: Rng, p: number): number => (rng.next() < p ? 1 : 0);
/** Beta(2, 5) by the ratio of gamma draws (shape 2 = sum of two exponentials; 5 = five). */
const beta25 = (rng: Rng): number => {
  const g = (k: number): number => { let s = 0; for (let i = 0; i < k; i++) s -= Math.log(1 - rng.next()); return s; };
  const a = g(2);
  return a / (a + g(5));
};

/** The miss count must stay under α·runs with room for simulation noise: its 99% Clopper–Pearson lower bound ≤ α. */
function atMostAlpha(t: Test, misses: number, runs: number, alpha: number, what: string): void {
  const lower = clopperPearson(misses, runs, 0.99).lower;
  t.ok(lower <= alpha, `${what}: ${misses}/${runs} = ${(misses / runs).toFixed(3)} (99% lower bound ${lower.toFixed(3)}) ≤ α = ${alpha}`);
}

t.test('a betting confidence sequence covers the mean at every n simultaneously (Bernoulli and Beta data)', async (t) => {
  const alpha = 0.1;
  const runs = 150;
  const n = 1000;
  for (const [name, mu, draw] of [
    ['Bernoulli(0.3)', 0.3, (r: Rng) => bernoulli(r, 0.3)],
    ['Beta(2,5)', 2 / 7, beta25],
  ] as const) {
    const rng = createRng(name.length * 977);
    let misses = 0;
    let widthEnd = 0;
    for (let run = 0; run < runs; run++) {
      const cs = bettingConfidenceSequence(alpha);
      let missed = false;
      for (let i = 0; i < n; i++) {
        cs.observe(draw(rng));
        const b = cs.bounds();
        if (!(b.lower <= mu && mu <= b.upper)) missed = true;
      }
      if (missed) misses++;
      const b = cs.bounds();
      widthEnd += (b.upper - b.lower) / runs;
    }
    atMostAlpha(t, misses, runs, alpha, `${name}: paths that ever exclude μ`);
    t.ok(widthEnd < 0.2, `${name}: the sequence narrows (mean width ${widthEnd.toFixed(3)} after ${n})`);
  }
});

t.test('the sequence narrows as data comes, and reaches the edge for a constant stream', async (t) => {
  const rng = createRng(5);
  const cs = bettingConfidenceSequence(0.05);
  const widths: number[] = [];
  for (let i = 1; i <= 4000; i++) {
    cs.observe(bernoulli(rng, 0.2));
    if (i === 100 || i === 1000 || i === 4000) widths.push(cs.bounds().upper - cs.bounds().lower);
  }
  t.ok(widths[0]! > widths[1]! && widths[1]! > widths[2]!, `width shrinks: ${widths.map((w) => w.toFixed(3)).join(' > ')}`);
  const ones = bettingConfidenceSequence(0.05);
  for (let i = 0; i < 200; i++) ones.observe(1);
  t.ok(ones.bounds().lower >= 0.9, `200 ones: lower bound ${ones.bounds().lower}`);
  t.equal(ones.bounds().upper, 1);
  t.equal(ones.bounds().estimate, 1);
  t.throws(() => ones.observe(1.5), RangeError, 'observations outside [0, 1] are refused');
  t.throws(() => bettingConfidenceSequence(0), RangeError, 'α must lie in (0, 1)');
});

t.test('a sequential test at its null boundary, watched after every observation, rejects with probability ≤ α', async (t) => {
  const alpha = 0.05;
  const runs = 400;
  const rng = createRng(11);
  let above = 0;
  let below = 0;
  for (let run = 0; run < runs; run++) {
    const up = sequentialMeanTest(0.5, 'above', alpha);
    const down = sequentialMeanTest(0.3, 'below', alpha);
    for (let i = 0; i < 3000; i++) {
      up.observe(bernoulli(rng, 0.5));
      down.observe(bernoulli(rng, 0.3));
    }
    if (up.rejected()) above++;
    if (down.rejected()) below++;
  }
  atMostAlpha(t, above, runs, alpha, 'H0: μ ≤ 0.5 with μ = 0.5');
  atMostAlpha(t, below, runs, alpha, 'H0: μ ≥ 0.3 with μ = 0.3');
  const flat = sequentialMeanTest(0.5, 'above', alpha);
  for (let i = 0; i < 100; i++) flat.observe(0.5);
  t.equal(flat.logCapital(), 0, 'observations exactly at m move no capital');
});

t.test('the same tests find a real difference, and say when', async (t) => {
  const rng = createRng(12);
  let found = 0;
  const at: number[] = [];
  for (let run = 0; run < 100; run++) {
    const test = sequentialMeanTest(0.5, 'above', 0.05);
    for (let i = 0; i < 3000 && !test.rejected(); i++) test.observe(bernoulli(rng, 0.6));
    if (test.rejected()) {
      found++;
      at.push(test.rejectedAt()!);
    }
  }
  t.ok(found >= 95, `μ = 0.6 against H0: μ ≤ 0.5 rejected in ${found}/100 paths within 3000`);
  // A stake is at most c/m = 1 here, so one observation multiplies capital by at most 1.5: reaching
  // 1/α = 20 takes at least ⌈log 20 / log 1.5⌉ = 8 observations, however lucky the path.
  t.ok(Math.min(...at) >= 8, `never before 8 observations (earliest ${Math.min(...at)})`);
  t.ok(at.every((n) => n <= 3000), 'rejectedAt counts observations');
});

t.test('paired differences of two interleaved streams: valid when equal, powerful when one is worse', async (t) => {
  const alpha = 0.05;
  const rng = createRng(21);
  /** 10% of traffic on the canary; harm (e.g. a down-vote) with probability pc / pb. */
  const simulate = (pc: number, pb: number, events: number): { rejectedAt: number | undefined } => {
    const pairing = arrivalPairing();
    const worse = sequentialMeanTest(differenceToUnit(0), 'above', alpha);
    for (let i = 0; i < events && !worse.rejected(); i++) {
      const canary = rng.next() < 0.1;
      const d = pairing.push(canary ? 'canary' : 'baseline', bernoulli(rng, canary ? pc : pb));
      if (d !== undefined) worse.observe(differenceToUnit(d));
    }
    return { rejectedAt: worse.rejectedAt() };
  };
  let falseAlarms = 0;
  for (let run = 0; run < 300; run++) if (simulate(0.2, 0.2, 20_000).rejectedAt !== undefined) falseAlarms++;
  atMostAlpha(t, falseAlarms, 300, alpha, 'equal versions: paths that ever call the canary worse');
  let found = 0;
  for (let run = 0; run < 60; run++) if (simulate(0.3, 0.2, 40_000).rejectedAt !== undefined) found++;
  t.ok(found >= 54, `10 points worse: found in ${found}/60 paths within 40 000 events (4 000 on the canary)`);
});

t.test('pairing follows arrival order only: the most recent partner, the surplus waits, the oldest drops', async (t) => {
  const p = arrivalPairing(2);
  t.equal(p.push('baseline', 0.2), undefined, 'nothing to pair with yet');
  t.equal(p.push('baseline', 0.4), undefined);
  t.equal(p.push('baseline', 0.6), undefined, 'a third waiting baseline pushes the oldest out');
  t.equal(p.waiting('baseline'), 2);
  t.equal(p.push('canary', 1), 1 - 0.6, 'a canary observation pairs with the most recent baseline');
  t.equal(p.push('canary', 0), 0 - 0.4);
  t.equal(p.push('canary', 0.5), undefined, 'the dropped 0.2 is gone: the canary waits');
  t.equal(p.push('baseline', 0.25), 0.5 - 0.25, 'and D is always canary − baseline');
  t.equal(p.pairs(), 3);
  t.ok(Math.abs(unitToDifference(differenceToUnit(-0.3)) + 0.3) < 1e-12, 'unit ↔ difference round trip');
});

t.test('rate evidence from counts: valid at the limit, finds an excess, and no events is no evidence', async (t) => {
  const alpha = 0.05;
  const rng = createRng(31);
  for (const p0 of [0.01, 0.2]) {
    let falseAlarms = 0;
    const runs = 400;
    for (let run = 0; run < runs; run++) {
      let k = 0;
      for (let n = 1; n <= 3000; n++) {
        k += bernoulli(rng, p0);
        if (rateExceeds(k, n, p0, alpha)) {
          falseAlarms++;
          break;
        }
      }
    }
    atMostAlpha(t, falseAlarms, runs, alpha, `rate = limit ${p0}: paths that ever exceed it`);
    let found = 0;
    for (let run = 0; run < 50; run++) {
      let k = 0;
      for (let n = 1; n <= 3000; n++) {
        k += bernoulli(rng, 3 * p0);
        if (rateExceeds(k, n, p0, alpha)) {
          found++;
          break;
        }
      }
    }
    t.ok(found >= 48, `rate 3× the limit ${p0}: found in ${found}/50`);
  }
  t.ok(logRateEvidence(0, 10_000, 0.01) < 0, 'no events in 10 000 trials is evidence for the null');
  t.ok(logRateEvidence(5, 100, 0.01) > logRateEvidence(4, 100, 0.01), 'more events, more evidence');
  t.throws(() => logRateEvidence(3, 2, 0.1), RangeError, 'k > n is refused');
});
