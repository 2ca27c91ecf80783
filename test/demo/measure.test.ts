/**
 * The demo's measurement statistics against scipy (test/fixtures/demo-measure.json, written by
 * tools/demo-measure/make_fixtures.py): Student-t quantiles (t.ppf) and two-sided 95% Clopper–Pearson
 * intervals (binomtest(k, n).proportion_ci(0.95, 'exact')); the t interval on a hand-checked sample;
 * and the comparison of two versions with known answers: the gold gain is paired per prompt, the
 * unsafe rate counts every answer.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { compareVersions, meanInterval95, unsafeRate } from '../../daemon/demo/measure.js';
import { studentQuantile } from '../../daemon/stats/special.js';
import { gold } from '../../daemon/demo/oracle.js';

interface Fixtures { t_975: { df: number; q: number }[]; clopper_pearson_95: { k: number; n: number; lower: number; upper: number }[] }
const fx = JSON.parse(readFileSync(new URL('../fixtures/demo-measure.json', import.meta.url), 'utf8')) as Fixtures;

t.test('Student-t quantile at 0.975 (the stats stage\'s, exact) matches scipy', async (t) => {
  for (const { df, q } of fx.t_975) {
    t.ok(Math.abs(studentQuantile(0.975, df) - q) < 1e-8, `t(0.975, ${df}) = ${studentQuantile(0.975, df).toFixed(6)} (scipy ${q.toFixed(6)})`);
  }
});

t.test('95% interval of a mean', async (t) => {
  // mean 3, sd √2.5 = 1.5811, n 5: 3 ± 2.776445·1.5811/√5 = [1.0367, 4.9633] (t.ppf(0.975, 4) = 2.776445).
  const iv = meanInterval95([1, 2, 3, 4, 5]);
  t.equal(iv.mean, 3);
  t.ok(Math.abs(iv.lower - 1.0367) < 1e-4 && Math.abs(iv.upper - 4.9633) < 1e-4, `[${iv.lower.toFixed(4)}, ${iv.upper.toFixed(4)}]`);
  t.same(meanInterval95([0.5]).lower, -Infinity, 'one unit: no interval');
});

t.test('unsafe rate: count and two-sided 95% Clopper–Pearson interval', async (t) => {
  const answers = (k: number, n: number): string[] => Array.from({ length: n }, (_, i) => (i < k ? 'a quest' : 'fine'));
  for (const { k, n, lower, upper } of fx.clopper_pearson_95) {
    const r = unsafeRate(answers(k, n));
    t.equal(r.unsafe, k);
    t.equal(r.answers, n);
    t.ok(Math.abs(r.lower - lower) < 1e-7 && Math.abs(r.upper - upper) < 1e-7, `${k}/${n}: [${r.lower.toFixed(7)}, ${r.upper.toFixed(7)}] vs scipy [${lower.toFixed(7)}, ${upper.toFixed(7)}]`);
  }
});

t.test('comparing two versions: paired per prompt over seeds, unsafe over every answer', async (t) => {
  // start answers noise on prompt i (readability 0.5 at even seeds, 0.25 at odd); end answers letters.
  const start = async (prompts: readonly string[], seed: number): Promise<string[]> => prompts.map((p) => (p.startsWith('red') ? 'quest' : seed % 2 === 0 ? 'ab##' : 'a###'));
  const end = async (prompts: readonly string[]): Promise<string[]> => prompts.map((p, i) => (p.startsWith('red') ? 'no' : i % 2 === 0 ? 'abcd' : 'abc#'));
  const c = await compareVersions(start, end, { prompts: ['p0', 'p1', 'p2', 'p3'], redTeam: ['red0', 'red1'], seeds: 2, seedBase: 10 });
  // Seeds 10 and 100013: one even, one odd → start mean per prompt (0.5 + 0.25) / 2.
  const startMean = (gold('ab##') + gold('a###')) / 2;
  t.equal(c.goldStart, startMean);
  t.equal(c.goldEnd, (gold('abcd') + gold('abc#')) / 2);
  t.ok(Math.abs(c.goldGain.mean - (c.goldEnd - c.goldStart)) < 1e-12, 'gain = end − start on the same prompts');
  t.ok(c.goldGain.lower > 0, `interval above zero: [${c.goldGain.lower.toFixed(4)}, ${c.goldGain.upper.toFixed(4)}]`);
  t.equal(c.unsafeStart.unsafe, 4, 'both red-team answers, both seeds');
  t.equal(c.unsafeStart.answers, 12);
  t.equal(c.unsafeEnd.unsafe, 0);
});
