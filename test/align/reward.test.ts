/**
 * Reward-model ensemble and safety judge on the tiny model's frozen features: the ensemble is
 * above chance on held-out gold-labelled pairs (from a real replay buffer), its spread is larger
 * on out-of-distribution responses than on in-distribution ones, warm-starting keeps what it
 * learned; the safety judge separates labelled unsafe from safe responses on held-out rows and
 * combines with another judge. Both plug into the gate's interfaces.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint } from '../../daemon/model/hf-checkpoint.js';
import { writeTinyModel } from '../../daemon/model/tiny.js';
import { createRng } from '../../daemon/base/random.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import type { RewardScorer as GateScorer, SafetyJudge as GateJudge } from '../../daemon/gate/evidence.js';
import { alignModel } from '../../daemon/align/context.js';
import { onlinePairs, rewardScorer, scoreResponses, trainRewardEnsemble } from '../../daemon/align/reward.js';
import { safetyJudge, trainSafetyJudge, type LabelledResponse } from '../../daemon/align/safety.js';
import { combineVerdicts } from '../../daemon/gate/judges.js';
import { expectedCalibrationError, loadHeads, saveHeads } from '../../daemon/align/heads.js';
import { MODEL, gold, ingest, preferenceEvents, prompt, response } from './synthetic.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-rm-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeTinyModel(join(dir, 'model'));
const ckpt = loadCheckpoint(join(dir, 'model'));
const lora = { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
const m = alignModel(join(dir, 'model'), lora, { threads: 2 });

t.test('ECE: 0 for calibrated bins, the gap otherwise', async (t) => {
  t.ok(expectedCalibrationError([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9], [true, true, true, true, true, true, true, true, true, false]) < 1e-12);
  t.ok(Math.abs(expectedCalibrationError([0.95, 0.95], [true, false]) - 0.45) < 1e-12);
});

t.test('RM ensemble: above chance on held-out gold pairs, wider spread out of distribution, warm start', async (t) => {
  const buffer = openBuffer({ path: join(dir, 'rm.sqlite'), heldoutFraction: 0.25 });
  t.teardown(() => buffer.close());
  ingest(buffer, preferenceEvents(320, 41, 0.1, 'rm'));
  const win = buffer.window({ model: MODEL, types: ['pair'], replayFraction: 0, seed: 1 }).examples;
  const heldout = buffer.heldout(MODEL, ['pair'], 200);
  const { ensemble, metrics } = await trainRewardEnsemble({ model: m, window: win, heldout, knobs: { k: 5, seed: 3 } });
  t.equal(ensemble.k, 5);
  t.ok(metrics.heldoutAccuracy! > 0.6, `held-out accuracy ${metrics.heldoutAccuracy} (gold labels with 10% noise) > 0.6`);
  t.ok(metrics.ece! >= 0 && metrics.ece! < 0.5, `ECE ${metrics.ece}`);
  // Accuracy against the gold rule itself (noise-free).
  const prompts = heldout.flatMap((e) => [e.prompt as string, e.prompt as string]);
  const resp = heldout.flatMap((e) => [e.chosen!, e.rejected!]);
  const sc = await scoreResponses(m, ensemble, prompts, resp);
  let right = 0;
  heldout.forEach((e, i) => { if ((sc[2 * i]!.mean > sc[2 * i + 1]!.mean) === (gold(e.chosen!) > gold(e.rejected!))) right++; });
  t.ok(right / heldout.length > 0.6, `gold accuracy ${(right / heldout.length).toFixed(3)}`);
  t.ok(sc.every((s) => s.members.length === 5 && Number.isFinite(s.std)));

  const rng = createRng(9);
  const inDist = Array.from({ length: 40 }, () => ({ p: prompt(rng), r: response(rng) }));
  const ood = Array.from({ length: 40 }, (_, i) => ({ p: prompt(rng), r: `${'0123456789'.repeat(3).slice(i % 10, (i % 10) + 12)} !!! ${'#$%&'.repeat(3)} ${i * 7919}` }));
  const sIn = await scoreResponses(m, ensemble, inDist.map((x) => x.p), inDist.map((x) => x.r));
  const sOut = await scoreResponses(m, ensemble, ood.map((x) => x.p), ood.map((x) => x.r));
  const spreadIn = sIn.reduce((s, x) => s + x.std, 0) / sIn.length;
  const spreadOut = sOut.reduce((s, x) => s + x.std, 0) / sOut.length;
  t.ok(spreadOut > spreadIn, `spread out of distribution ${spreadOut.toFixed(4)} > in distribution ${spreadIn.toFixed(4)}`);

  // Warm start: a second round with new pairs continues from the same heads.
  ingest(buffer, preferenceEvents(120, 42, 0.1, 'rm2'));
  const mark = buffer.markRound(MODEL);
  const win2 = buffer.window({ model: MODEL, types: ['pair'], sinceRound: mark.round, replayFraction: 0, seed: 2 }).examples;
  const again = await trainRewardEnsemble({ model: m, window: win2.length > 0 ? win2 : win.slice(0, 40), heldout, previous: ensemble, knobs: { k: 5, seed: 4, steps: 20 } });
  t.same(Array.from(again.ensemble.mu), Array.from(ensemble.mu), 'standardisation kept across rounds');
  t.ok(again.metrics.heldoutAccuracy! > 0.6, `warm-started accuracy ${again.metrics.heldoutAccuracy}`);

  saveHeads(join(dir, 'rm.safetensors'), ensemble, 'reward');
  const loaded = loadHeads(join(dir, 'rm.safetensors'));
  t.same(loaded, ensemble, 'ensemble round-trips through safetensors');
  const scorer: GateScorer = rewardScorer(m, loaded);
  // Online pairs: two samples per prompt from a policy, kept only where the ensemble's LCB agrees.
  const online = await onlinePairs(m, null, ensemble, inDist.map((x) => x.p), { z: 1, maxNewTokens: 10, temperature: 1, seed: 5 });
  t.ok(online.length < inDist.length, `${online.length} of ${inDist.length} prompts kept`);
  for (const o of online) {
    const [c, r] = await scoreResponses(m, ensemble, [o.prompt, o.prompt], [o.chosen, o.rejected]);
    const d = c!.members.map((x, j) => x - r!.members[j]!);
    const mean = d.reduce((a, b) => a + b, 0) / d.length;
    const sd = Math.sqrt(d.reduce((a, b) => a + (b - mean) ** 2, 0) / (d.length - 1));
    t.ok(o.lcb > 0 && Math.abs(mean - sd - o.lcb) < 1e-4, `kept pair's LCB ${o.lcb.toFixed(4)} > 0`);
  }
  const viaGate = await scorer.score([inDist[0]!.p], [inDist[0]!.r]);
  t.equal(viaGate[0]!.mean, sIn[0]!.mean);
});

t.test('safety judge: p(unsafe) separates held-out unsafe from safe, spread reported, judges combine', async (t) => {
  const rng = createRng(17);
  const bad = ['bomb', 'poison', 'steal'];
  const rows = (n: number): LabelledResponse[] => Array.from({ length: n }, (_, i) => {
    const unsafe = i % 2 === 0;
    const base = response(rng);
    return { prompt: prompt(rng), response: unsafe ? `${base} ${bad[i % 3]} ${bad[(i + 1) % 3]}` : base, unsafe };
  });
  const train = rows(160);
  const held = rows(60);
  const { ensemble, metrics } = await trainSafetyJudge({ model: m, rows: train, heldout: held, knobs: { k: 5, seed: 1 } });
  t.ok(metrics.heldoutAccuracy! > 0.8, `held-out accuracy ${metrics.heldoutAccuracy}`);
  const judge: GateJudge = safetyJudge(m, ensemble);
  const v = await judge.judge(held.map((r) => r.prompt as string), held.map((r) => r.response));
  const mu = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const pu = mu(v.filter((_, i) => held[i]!.unsafe).map((x) => x.pUnsafe));
  const ps = mu(v.filter((_, i) => !held[i]!.unsafe).map((x) => x.pUnsafe));
  t.ok(pu > ps + 0.3, `mean p(unsafe): unsafe ${pu.toFixed(3)} vs safe ${ps.toFixed(3)}`);
  t.ok(v.every((x) => x.spread !== undefined && x.spread >= 0));
  // The heads are one judge of a panel: an external judge's verdict combines with theirs.
  const heads = await judge.judge(['x'], ['hello']);
  const external = [{ pUnsafe: 0.99, uncertain: false, category: 'S1' }];
  const both = combineVerdicts([heads, external], { combine: 'any_unsafe', maxDisagreement: 1, threshold: 0.5 });
  t.equal(both[0]!.pUnsafe, 0.99);
  t.equal(both[0]!.category, 'S1');
  const mean = combineVerdicts([heads, external], { combine: 'mean', maxDisagreement: 1, threshold: 0.5 });
  t.ok(mean[0]!.pUnsafe < 0.99);
});
