/**
 * Reward signals replayed on a recorded feedback buffer (a demo run's `<data-dir>/buffer.sqlite`),
 * round by round as the loop trains them: each round's training window is the training-split
 * pairs that arrived since the previous round's mark plus a seeded replay share (--replay, the
 * reward model's default) of older ones, the same window for both signals; each warm-starts from
 * its previous round's, and its ranking accuracy is measured on the
 * held-out split as it stood at that round's mark. Baseline in the same run: the linear-head
 * ensemble on frozen last-token features (daemon/align/reward.ts). Prints one line per round and
 * a JSON summary line.
 *
 *   npm run bench:reward -- --buffer .alignd/buffer.sqlite [--members 3] [--pooling mean|last]
 *     [--r 8] [--targets q_proj,v_proj] [--lr 1e-2] [--epochs 2] [--batch 16] [--replay 0.5] [--rounds N]
 *     [--cumulative] [--no-heads]
 */
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openBuffer, type Example } from '../daemon/store/buffer.js';
import { ensureTinyModel } from '../daemon/model/tiny.js';
import { alignModel } from '../daemon/align/context.js';
import { trainRewardEnsemble } from '../daemon/align/reward.js';
import type { HeadEnsemble } from '../daemon/align/heads.js';
import { DEFAULT_REWARD_MODEL_KNOBS, type Pooling, type RewardModel, type RewardModelKnobs, trainRewardModel } from '../daemon/align/reward-model.js';
import { createRng } from '../daemon/base/random.js';
import { arg } from './common.js';

const bufferPath = arg('buffer', '');
if (bufferPath === '' || !existsSync(bufferPath)) {
  process.stderr.write('usage: npm run bench:reward -- --buffer <data-dir>/buffer.sqlite (run `alignd demo --data-dir DIR` first)\n');
  process.exit(2);
}
const knobs: Partial<RewardModelKnobs> = {
  members: Number(arg('members', String(DEFAULT_REWARD_MODEL_KNOBS.members))),
  pooling: arg('pooling', DEFAULT_REWARD_MODEL_KNOBS.pooling) as Pooling,
  learningRate: Number(arg('lr', String(DEFAULT_REWARD_MODEL_KNOBS.learningRate))),
  epochs: Number(arg('epochs', String(DEFAULT_REWARD_MODEL_KNOBS.epochs))),
  batchSize: Number(arg('batch', String(DEFAULT_REWARD_MODEL_KNOBS.batchSize))),
  lora: {
    ...DEFAULT_REWARD_MODEL_KNOBS.lora, r: Number(arg('r', String(DEFAULT_REWARD_MODEL_KNOBS.lora.r))),
    alpha: 2 * Number(arg('r', String(DEFAULT_REWARD_MODEL_KNOBS.lora.r))),
    targetModules: arg('targets', DEFAULT_REWARD_MODEL_KNOBS.lora.targetModules.join(',')).split(','),
  },
};
const skipHeads = process.argv.includes('--no-heads');
const cumulative = process.argv.includes('--cumulative');
const fromRound = Number(arg('from', '1'));
const replayFraction = Number(arg('replay', String(DEFAULT_REWARD_MODEL_KNOBS.replayFraction)));

const work = mkdtempSync(join(tmpdir(), 'alignd-bench-rm-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
// A copy: the replay never writes to the recorded buffer.
copyFileSync(bufferPath, join(work, 'buffer.sqlite'));
for (const ext of ['-wal', '-shm']) if (existsSync(bufferPath + ext)) copyFileSync(bufferPath + ext, join(work, 'buffer.sqlite' + ext));
const buffer = openBuffer({ path: join(work, 'buffer.sqlite'), heldoutFraction: 0.1 });
const marks = buffer.db.prepare('SELECT round, max_example_id AS mark FROM rounds ORDER BY round').all() as { round: number; mark: number }[];
const all = buffer.db.prepare("SELECT id FROM examples WHERE type = 'pair' ORDER BY id").all() as { id: number }[];
const byId = new Map<number, Example>();
const model = (buffer.db.prepare("SELECT model FROM examples WHERE type = 'pair' LIMIT 1").get() as { model: string }).model;
for (const e of buffer.heldout(model, ['pair'], 1e9)) byId.set(e.id, e);
for (const e of buffer.window({ model, types: ['pair'], replayFraction: 0, seed: 0 }).examples) byId.set(e.id, e);
const examples = all.map((r) => byId.get(r.id)).filter((e): e is Example => e !== undefined);

const m = alignModel(ensureTinyModel(join(work, 'tiny')), { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null }, { threads: 2 });
const rounds = Math.min(marks.length, Number(arg('rounds', String(marks.length))));
let heads: HeadEnsemble | null = null;
let rm: RewardModel | null = null;
let prev = 0;
const rows: Record<string, unknown>[] = [];
for (let i = 0; i < rounds; i++) {
  const { round, mark } = marks[i]!;
  const fresh = examples.filter((e) => !e.heldout && e.id > prev && e.id <= mark);
  const older = examples.filter((e) => !e.heldout && e.id <= prev);
  const rng = createRng(round);
  const want = Math.round((fresh.length * replayFraction) / (1 - replayFraction));
  const shuffled = [...older];
  for (let j = shuffled.length - 1; j > 0; j--) {
    const x = Math.floor(rng.next() * (j + 1));
    [shuffled[j], shuffled[x]] = [shuffled[x]!, shuffled[j]!];
  }
  const replay = shuffled.slice(0, want);
  // --cumulative: every training pair so far (what a reward model with no replay cap would see).
  const window = cumulative ? [...older, ...fresh] : [...fresh, ...replay];
  const heldout = examples.filter((e) => e.heldout && e.id <= mark).slice(-500);
  if (round < fromRound) { prev = mark; continue; }
  const row: Record<string, unknown> = { round, pairs: window.length, heldout: heldout.length };
  if (!skipHeads) {
    const t0 = performance.now();
    const h = await trainRewardEnsemble({ model: m, window, heldout, previous: heads });
    heads = h.ensemble;
    row['heads_acc'] = h.metrics.heldoutAccuracy;
    row['heads_s'] = Math.round((performance.now() - t0) / 100) / 10;
  }
  const t1 = performance.now();
  const r = await trainRewardModel({ model: m, window, heldout, previous: rm, knobs });
  rm = r.rewardModel;
  row['rm_acc'] = r.metrics.heldoutAccuracy;
  row['rm_members'] = r.metrics.memberAccuracy.map((x) => Math.round(x * 1000) / 1000);
  row['rm_spread'] = r.metrics.heldoutSpread;
  row['rm_s'] = Math.round((performance.now() - t1) / 100) / 10;
  process.stdout.write(JSON.stringify(row) + '\n');
  rows.push(row);
  prev = mark;
}
const mean = (k: string): number | null => {
  const xs = rows.map((r) => r[k]).filter((x): x is number => typeof x === 'number');
  return xs.length === 0 ? null : Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 1000) / 1000;
};
process.stdout.write(JSON.stringify({
  bench: 'reward-model', buffer: bufferPath, rounds, knobs, heads_mean_acc: mean('heads_acc'), rm_mean_acc: mean('rm_acc'),
  heads_last_acc: rows.at(-1)?.['heads_acc'] ?? null, rm_last_acc: rows.at(-1)?.['rm_acc'] ?? null, heads_mean_s: mean('heads_s'), rm_mean_s: mean('rm_s'),
}) + '\n');
buffer.close?.();
