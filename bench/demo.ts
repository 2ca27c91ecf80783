/**
 * The embedded demo over several seeds, each as the README runs it (`alignd demo --seed S`, its
 * default rounds, a fresh data directory), one after another. Prints one JSON line: per seed the
 * promotions, the paired gold gain of the end version over the start version with its 95%
 * interval, the unsafe rates with their Clopper–Pearson intervals, and the reward signal's last
 * held-out accuracy; then issue 15's bar for the demo: at least one promotion for every seed, and
 * a gold-gain interval above zero for at least 4 of 5 seeds. Progress goes to stderr.
 *
 *   npm run bench:demo -- [--seeds 1,2,3,4,5] [--rounds N] [--keep DIR] [--policy FILE (default: the demo's)]
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { arg } from './common.js';
import type { DemoSummary } from '../daemon/demo/demo.js';

const seeds = arg('seeds', '1,2,3,4,5').split(',').map(Number);
const rounds = arg('rounds', '');
const keep = arg('keep', '');
const policy = arg('policy', '');
const mainJs = fileURLToPath(new URL('../daemon/main.js', import.meta.url));
const root = keep === '' ? mkdtempSync(join(tmpdir(), 'alignd-bench-demo-')) : keep;
mkdirSync(root, { recursive: true });

async function demo(seed: number): Promise<DemoSummary> {
  const dataDir = join(root, `seed-${seed}`);
  rmSync(dataDir, { recursive: true, force: true });
  const args = [mainJs, 'demo', '--seed', String(seed), '--port', '0', '--data-dir', dataDir, ...(rounds === '' ? [] : ['--rounds', rounds]),
    ...(policy === '' ? [] : ['--policy', policy])];
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ALIGND_LOG_LEVEL: 'warn' } });
  let out = '';
  let err = '';
  proc.stdout.on('data', (c: Buffer) => { out += c.toString(); });
  proc.stderr.on('data', (c: Buffer) => { err += c.toString(); });
  const code = await new Promise<number | null>((r) => proc.once('exit', r));
  if (code !== 0) throw new Error(`demo --seed ${seed} exited ${code}:\n${err.split('\n').slice(-20).join('\n')}`);
  return JSON.parse(out.trim().split('\n').at(-1)!) as DemoSummary;
}

const perSeed: Record<string, unknown>[] = [];
for (const seed of seeds) {
  const t0 = performance.now();
  const s = await demo(seed);
  const row = {
    seed, promotions: s.promotions, holds: s.holds, rejections: s.rejections, discarded: s.discarded,
    gold_start: s.gold_reward_start, gold_end: s.gold_reward_end, gold_gain: s.gold_gain, gold_gain_ci95: s.gold_gain_ci95,
    gain_excludes_zero: s.gold_gain_ci95[0] > 0 || s.gold_gain_ci95[1] < 0,
    unsafe_start: s.unsafe_start, unsafe_start_ci95: s.unsafe_rate_start_ci95, unsafe_end: s.unsafe_end, unsafe_end_ci95: s.unsafe_rate_end_ci95,
    reward_signal: s.reward_signal.map((r) => r.heldout).join(' '), reward_signal_name: s.reward_signal.at(-1)?.name ?? null,
    seconds: Math.round((performance.now() - t0) / 1000),
  };
  process.stderr.write(JSON.stringify(row) + '\n');
  perSeed.push(row);
}
const promotedAll = perSeed.every((r) => (r['promotions'] as number) >= 1);
const aboveZero = perSeed.filter((r) => (r['gold_gain_ci95'] as [number, number])[0] > 0).length;
process.stdout.write(JSON.stringify({
  bench: 'demo', seeds, rounds: rounds === '' ? 'default' : Number(rounds), per_seed: perSeed,
  bar: { every_seed_promoted: promotedAll, gain_interval_above_zero: `${aboveZero}/${seeds.length}`, met: promotedAll && aboveZero >= Math.min(4, seeds.length) },
}) + '\n');
if (keep === '') rmSync(root, { recursive: true, force: true });
