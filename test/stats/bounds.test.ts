/**
 * The stats stage against published values (SciPy 1.17, test/fixtures/stats/bounds.json, made by
 * tools/stats-fixtures/run.sh) and against exact coverage: the one-sided Clopper–Pearson and
 * paired-difference bounds are computed for every outcome of a binomial (trinomial) experiment and
 * their coverage summed exactly, so "holds at every n" is checked, not sampled.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../harness/daemon.js';
import { binomialCdf, clopperPearson, pairedDifferenceUpper, wilson } from '../../daemon/stats/binomial.js';
import { normalCdf, normalQuantile } from '../../daemon/stats/normal.js';
import { studentQuantile } from '../../daemon/stats/special.js';

interface Fixtures {
  scipy: string;
  normal: Array<{ p?: number; quantile?: number; x?: number; cdf?: number }>;
  student_t: Array<{ p: number; nu: number; quantile: number }>;
  binomial_cdf: Array<{ k: number; n: number; p: number; cdf: number }>;
  clopper_pearson: Array<{ k: number; n: number; confidence: number; lower: number; upper: number }>;
  wilson: Array<{ k: number; n: number; confidence: number; lower: number; upper: number }>;
  paired: Array<{ n: number; candidateOnly: number; referenceOnly: number; confidence: number; estimate: number; upper: number }>;
}
const fx = JSON.parse(readFileSync(join(repoRoot, 'test/fixtures/stats/bounds.json'), 'utf8')) as Fixtures;
const close = (a: number, b: number, abs: number, rel = 0): boolean => Math.abs(a - b) <= abs + rel * Math.abs(b);

t.test('normal quantile and CDF (scipy.stats.norm)', async (t) => {
  for (const r of fx.normal) {
    if (r.p !== undefined) t.ok(close(normalQuantile(r.p), r.quantile!, 0, 2e-9), `Φ⁻¹(${r.p}) = ${normalQuantile(r.p)} vs ${r.quantile}`);
    else t.ok(close(normalCdf(r.x!), r.cdf!, 0, 2e-7), `Φ(${r.x}) = ${normalCdf(r.x!)} vs ${r.cdf}`);
  }
});

t.test('Student t quantiles (scipy.stats.t)', async (t) => {
  for (const r of fx.student_t) t.ok(close(studentQuantile(r.p, r.nu), r.quantile, 0, 1e-9), `t(${r.p}; ${r.nu}) = ${studentQuantile(r.p, r.nu)} vs ${r.quantile}`);
});

t.test('binomial CDF (scipy.stats.binom)', async (t) => {
  for (const r of fx.binomial_cdf) t.ok(close(binomialCdf(r.k, r.n, r.p), r.cdf, 1e-300, 1e-10), `P(X ≤ ${r.k}; ${r.n}, ${r.p}) = ${binomialCdf(r.k, r.n, r.p)} vs ${r.cdf}`);
});

t.test('Clopper–Pearson and Wilson bounds (beta quantiles, score formula)', async (t) => {
  t.equal(fx.clopper_pearson.length, 264);
  for (const r of fx.clopper_pearson) {
    const b = clopperPearson(r.k, r.n, r.confidence);
    t.ok(close(b.lower, r.lower, 1e-9) && close(b.upper, r.upper, 1e-9), `CP ${r.k}/${r.n} at ${r.confidence}: ${JSON.stringify(b)} vs [${r.lower}, ${r.upper}]`);
  }
  for (const r of fx.wilson) {
    const b = wilson(r.k, r.n, r.confidence);
    t.ok(close(b.lower, r.lower, 1e-8) && close(b.upper, r.upper, 1e-8), `Wilson ${r.k}/${r.n} at ${r.confidence}`);
  }
});

t.test('paired difference bound (its Clopper–Pearson factors from SciPy)', async (t) => {
  for (const r of fx.paired) {
    const b = pairedDifferenceUpper({ n: r.n, candidateOnly: r.candidateOnly, referenceOnly: r.referenceOnly }, r.confidence);
    t.ok(close(b.upper, r.upper, 1e-9) && close(b.estimate, r.estimate, 1e-12), `${r.candidateOnly}/${r.referenceOnly} of ${r.n} at ${r.confidence}: ${b.upper} vs ${r.upper}`);
  }
  t.throws(() => pairedDifferenceUpper({ n: 5, candidateOnly: 4, referenceOnly: 3 }, 0.95), /exceed 5 probes/);
});

/** Exact one-sided coverage of an upper bound for p over every outcome k of Binomial(n, p). */
function coverage(n: number, p: number, upper: (k: number) => number): number {
  let c = 0;
  for (let k = 0; k <= n; k++) if (p <= upper(k)) c += binomialCdf(k, n, p) - binomialCdf(k - 1, n, p);
  return c;
}

t.test('exact coverage: Clopper–Pearson never below nominal; Wilson below it at the probe-set sizes', async (t) => {
  for (const n of [20, 30, 50, 100]) {
    const cp = Array.from({ length: n + 1 }, (_, k) => clopperPearson(k, n, 0.95).upper);
    const wi = Array.from({ length: n + 1 }, (_, k) => wilson(k, n, 0.95).upper);
    let cpMin = 1, wiMin = 1;
    for (let i = 1; i < 200; i++) {
      const p = i / 200;
      cpMin = Math.min(cpMin, coverage(n, p, (k) => cp[k]!));
      wiMin = Math.min(wiMin, coverage(n, p, (k) => wi[k]!));
    }
    t.ok(cpMin >= 0.95 - 1e-12, `n=${n}: Clopper–Pearson's worst coverage ${cpMin.toFixed(4)} ≥ 0.95`);
    t.ok(wiMin < 0.95, `n=${n}: Wilson's worst coverage ${wiMin.toFixed(4)} < 0.95`);
  }
});

t.test('exact coverage of the paired difference bound over a grid of discordance patterns', async (t) => {
  const n = 30;
  for (const conf of [0.95, 0.99]) {
    const upper: number[][] = [];
    for (let b = 0; b <= n; b++) {
      upper.push([]);
      for (let r = 0; b + r <= n; r++) upper[b]!.push(pairedDifferenceUpper({ n, candidateOnly: b, referenceOnly: r }, conf).upper);
    }
    const lf = (x: number): number => { let s = 0; for (let i = 2; i <= x; i++) s += Math.log(i); return s; };
    let worst = 1;
    for (const p10 of [0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.35, 0.5]) {
      for (const p01 of [0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.35, 0.5]) {
        if (p10 + p01 > 1) continue;
        const delta = p10 - p01;
        let cov = 0;
        for (let b = 0; b <= n; b++) for (let r = 0; b + r <= n; r++) {
          if (!(delta <= upper[b]![r]!)) continue;
          const lp = lf(n) - lf(b) - lf(r) - lf(n - b - r) + (b === 0 ? 0 : b * Math.log(p10)) + (r === 0 ? 0 : r * Math.log(p01)) + (n - b - r === 0 ? 0 : (n - b - r) * Math.log1p(-(p10 + p01)));
          cov += Math.exp(lp);
        }
        worst = Math.min(worst, cov);
      }
    }
    t.ok(worst >= conf - 1e-9, `n=${n}, confidence ${conf}: worst exact coverage ${worst.toFixed(5)}`);
  }
});
