/**
 * The Bradley–Terry LoRA reward model on the tiny model: its loss gradients (LoRA and score head,
 * every pooling) against float64 central differences; learning a synthetic preference of known
 * structure from a real replay buffer to high held-out accuracy, above the linear heads on frozen
 * features measured on the same split; training only on the training split; a safetensors round
 * trip; warm start across rounds; binary (up/down) feedback ranked and trained on as preferences;
 * the gate's RewardScorer contract; a wider member spread out of distribution than in it; the
 * members' common scale (Platt scaling on training pairs) recovering a known scale and undoing
 * any affine change of a member's raw rewards.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyModel } from '../../daemon/model/tiny.js';
import { loadModel } from '../../daemon/model/model.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { declareBaseWeights, declareLora } from '../../daemon/model/forward-graph.js';
import { initLora } from '../../daemon/model/lora.js';
import { loraHostTensors } from '../../daemon/model/model.js';
import { input, param, tensor } from '../../daemon/engine/index.js';
import { createRng } from '../../daemon/base/random.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import type { RewardScorer } from '../../daemon/gate/evidence.js';
import { alignModel } from '../../daemon/align/context.js';
import { trainRewardEnsemble } from '../../daemon/align/reward.js';
import {
  type Pooling, RESPONSE_MASK, SCORE_WEIGHT, btLosses, buildRewards, loadRewardModel, responseMask, rewardInputs, rewardModelScorer,
  fitMemberScale, saveRewardModel, scoreWithRewardModel, trainRewardModel,
} from '../../daemon/align/reward-model.js';
import { gradcheck } from '../engine/gradcheck.js';
import { MODEL, gold, ingest, preferenceEvents, prompt, response } from './synthetic.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-btrm-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeTinyModel(join(dir, 'model'));
const model = loadModel(join(dir, 'model'), { threads: 2 });
const m = alignModel(model, { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null });
const tok = model.tokenizer!;

t.test('gradients of the BT loss (LoRA and score head) match float64 central differences', async (t) => {
  const rng = createRng(5);
  const seqs = [
    tok.promptResponse('Write a line 1', 'aaa bab'), tok.promptResponse('Write letters 2', 'xyz q'),
    tok.promptResponse('Write a word 3', 'a a a a'), tok.promptResponse('Write a line 4', 'qq'),
  ];
  const b = packLogProbBatch(seqs, model.padId);
  const dims = [b.batch, b.length];
  // LoRA on an attention and an MLP module with mean pooling, one module with last-token pooling
  // (the same LoRA paths; kept small: central differences take 2 runs per element).
  for (const [pooling, targets] of [['mean', ['v_proj', 'down_proj']], ['last', ['v_proj']]] as [Pooling, string[]][]) {
    const lora = { r: 1, loraAlpha: 2, targetModules: targets, loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
    // A point away from PEFT's init (B ≠ 0), so gradients reach A through B.
    const adapter = initLora(model.spec, lora, 3);
    for (const p of adapter.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.3, 0.3);
    const host = loraHostTensors(adapter);
    const rows = 1;
    const r = await gradcheck({
      name: `reward model ${pooling}`,
      yDims: [2],
      build: (g, dt) => {
        const base = declareBaseWeights(g, model.weights, dt);
        const lv = declareLora(g, model.spec, lora, 'param', dt);
        const score = param(g, SCORE_WEIGHT, dt, [rows, model.spec.hiddenSize]);
        const rewards = buildRewards(base, lv, score, rewardInputs(g, dt), pooling);
        const y = btLosses(rewards, input(g, 'ci', 'int64', [2]), input(g, 'ri', 'int64', [2]), input(g, 'margin', dt, [2]), 0.01).perPair;
        const wrt = [...lv.pairs.values()].flatMap((p) => [p.a, p.b]).map((v) => ({ v, data: tensor(dt, host[v.name]!.dims, Float64Array.from(host[v.name]!.data as Float32Array)) }));
        const head = Float64Array.from({ length: rows * model.spec.hiddenSize }, () => rng.uniform(-0.5, 0.5));
        return {
          y, wrt: [...wrt, { v: score, data: tensor(dt, [rows, model.spec.hiddenSize], head) }],
          feeds: {
            input_ids: tensor('int64', dims, Array.from(b.inputIds)), attention_mask: tensor(dt, dims, Array.from(b.attentionMask)),
            [RESPONSE_MASK]: tensor(dt, dims, Array.from(responseMask(b))),
            ci: tensor('int64', [2], [0, 2]), ri: tensor('int64', [2], [1, 3]), margin: tensor(dt, [2], [0, 0.5]),
          },
        };
      },
    });
    t.ok(r.fdNorm > 1e-3, `${pooling}: gradient is not trivially zero (‖fd‖ = ${r.fdNorm.toExponential(2)})`);
    const tol = r.dtype === 'float64' ? 1e-6 : 1e-4;
    t.ok(r.relError < tol, `${pooling}: relative error ${r.relError.toExponential(2)} over ${r.elements} elements (${r.dtype})`);
  }
});

t.test('a member\'s common scale: calibrated preference log-odds, whatever its raw offset and scale', async (t) => {
  // Raw rewards whose preferences follow P(chosen) = σ(2·(r⁺ − r⁻)): the fitted scale is ≈ 2.
  const rng = createRng(5);
  const chosen: number[] = [];
  const rejected: number[] = [];
  for (let i = 0; i < 4000; i++) {
    const a = rng.normal();
    const b = rng.normal();
    const aWins = rng.next() < 1 / (1 + Math.exp(-2 * (a - b)));
    chosen.push(aWins ? a : b);
    rejected.push(aWins ? b : a);
  }
  const fit = fitMemberScale(chosen, rejected);
  t.ok(Math.abs(fit.scale - 2) < 0.15, `scale ${fit.scale.toFixed(3)} ≈ 2 (the preferences' true log-odds scale)`);
  t.ok(Math.abs(fit.offset) < 0.05, `offset ${fit.offset.toFixed(3)} ≈ the mean raw reward, 0`);
  // The same member with its raw rewards stretched ×10 and shifted by 3 (another init, another
  // number of steps): on the common scale its rewards are the same.
  const wide = fitMemberScale(chosen.map((x) => 10 * x + 3), rejected.map((x) => 10 * x + 3));
  const common = (f: { offset: number; scale: number }, x: number): number => f.scale * (x - f.offset);
  const worst = Math.max(...chosen.slice(0, 200).map((x) => Math.abs(common(wide, 10 * x + 3) - common(fit, x))));
  t.ok(worst < 1e-3, `stretched and shifted raw rewards land on the same common scale (largest difference ${worst.toExponential(2)})`);
  // Pairs it ranks no better than chance: scale 0 (it cannot lean on the mean); separable ones: finite.
  const chance = fitMemberScale([1, -1], [-1, 1]).scale;
  t.ok(chance >= 0 && chance < 1e-6, `no better than chance: scale ${chance.toExponential(1)} ≈ 0`);
  const sep = fitMemberScale([1, 2, 3], [0, 1, 2]).scale;
  t.ok(Number.isFinite(sep) && sep > 1, `separable pairs: a finite scale (${sep.toFixed(2)})`);
  t.same(fitMemberScale([], []), { offset: 0, scale: 1 }, 'no pairs: the identity');
});

t.test('response mask: 1 exactly at the response tokens', async (t) => {
  const s = tok.promptResponse('Write a line 1', 'ab');
  const b = packLogProbBatch([s, tok.promptResponse('Write a line 22', 'abcdef')], model.padId);
  const mask = responseMask(b);
  const row0 = Array.from(mask.subarray(0, b.length));
  t.same(row0, Array.from({ length: b.length }, (_, i) => (i >= s.promptLength && i < s.ids.length ? 1 : 0)));
});

t.test('learns a synthetic preference to high held-out accuracy; only the training split; warm start; save/load; spread', async (t) => {
  const buffer = openBuffer({ path: join(dir, 'rm.sqlite'), heldoutFraction: 0.25 });
  t.teardown(() => buffer.close());
  ingest(buffer, preferenceEvents(400, 41, 0.1, 'rm'));
  const win = buffer.window({ model: MODEL, types: ['pair'], replayFraction: 0, seed: 1 }).examples;
  const heldout = buffer.heldout(MODEL, ['pair'], 500);
  t.ok(heldout.length >= 60, `${heldout.length} held-out pairs`);
  // A window that (wrongly) carries held-out pairs: they must not be trained on.
  const { rewardModel: rm, metrics } = await trainRewardModel({ model: m, window: [...win, ...heldout], heldout, knobs: { members: 3, epochs: 2, seed: 3 } });
  t.equal(metrics.pairs, win.length, 'trained on the training split only');
  t.equal(rm.members.length, 3);
  t.equal(metrics.heldoutPairs, heldout.length);
  t.equal(metrics.heldoutCorrect, Math.round(metrics.heldoutAccuracy! * heldout.length));
  // Labels carry 10% noise, so ~0.9 is the ceiling against them; against the noise-free rule below.
  t.ok(metrics.heldoutAccuracy! > 0.75, `held-out accuracy ${metrics.heldoutAccuracy!.toFixed(3)} (noisy labels) > 0.75`);
  const prompts = heldout.flatMap((e) => [e.prompt, e.prompt]);
  const responses = heldout.flatMap((e) => [e.chosen!, e.rejected!]);
  const sc = await scoreWithRewardModel(m, rm, prompts, responses);
  const goldAcc = heldout.filter((e, i) => (sc[2 * i]!.mean > sc[2 * i + 1]!.mean) === (gold(e.chosen!) > gold(e.rejected!))).length / heldout.length;
  t.ok(goldAcc > 0.85, `held-out accuracy against the hidden rule ${goldAcc.toFixed(3)} > 0.85`);
  const heads = await trainRewardEnsemble({ model: m, window: win, heldout, knobs: { k: 5, seed: 3 } });
  t.ok(metrics.heldoutAccuracy! > heads.metrics.heldoutAccuracy!,
    `reward model ${metrics.heldoutAccuracy!.toFixed(3)} > linear heads on frozen features ${heads.metrics.heldoutAccuracy!.toFixed(3)} on the same split`);
  t.ok(metrics.heldoutSpread! > 0 && sc.every((s) => s.members.length === 3 && Number.isFinite(s.std)), `members disagree (spread ${metrics.heldoutSpread!.toFixed(3)})`);

  // Save/load: the same tensors, the same scores.
  const file = join(dir, 'reward-model.safetensors');
  saveRewardModel(file, rm);
  const back = loadRewardModel(file, model.spec);
  t.same(back.pooling, rm.pooling);
  t.same(back.lora, rm.lora);
  t.same(back.members.map((x) => Array.from(x.score)), rm.members.map((x) => Array.from(x.score)));
  t.ok(rm.members.every((x) => x.scale > 0 && x.scale !== 1 && Number.isFinite(x.offset)), `every member's scale fitted (${rm.members.map((x) => x.scale.toFixed(2)).join(', ')})`);
  t.same(back.members.map((x) => [x.offset, x.scale]), rm.members.map((x) => [Math.fround(x.offset), Math.fround(x.scale)]), 'offsets and scales round-trip');
  t.same(back.members.map((x) => [...x.adapter.pairs.values()].map((p) => [Array.from(p.a), Array.from(p.b)])),
    rm.members.map((x) => [...x.adapter.pairs.values()].map((p) => [Array.from(p.a), Array.from(p.b)])), 'LoRA tensors round-trip');
  const scorer: RewardScorer = rewardModelScorer(m, back);
  const viaGate = await scorer.score([prompts[0] as string], [responses[0]!]);
  // (Alone vs in a padded batch: float32 sums in another order.)
  t.ok(Math.abs(viaGate[0]!.mean - sc[0]!.mean) < 1e-5, `the loaded model scores as the saved one (${viaGate[0]!.mean} vs ${sc[0]!.mean})`);

  // Binary feedback: up-votes on the chosen answers and down-votes on the rejected ones rank the
  // same preferences (asPairs: up over down, in id order), so they measure the same; votes train it.
  const votes = (xs: typeof heldout) => xs.flatMap((e) => [
    { ...e, id: 2 * e.id, type: 'kto' as const, chosen: null, rejected: null, response: e.chosen, label: 'up' },
    { ...e, id: 2 * e.id + 1, type: 'kto' as const, chosen: null, rejected: null, response: e.rejected, label: 'down' },
  ]);
  const byVotes = await trainRewardModel({ model: m, window: [], heldout: votes(heldout), previous: rm, knobs: { members: 3, seed: 4 } });
  t.equal(byVotes.metrics.heldoutPairs, heldout.length, 'held-out votes pair up: one up-over-down per held-out pair');
  t.equal(byVotes.metrics.heldoutCorrect, metrics.heldoutCorrect, 'and rank as the pairs they came from');
  const fromVotes = await trainRewardModel({ model: m, window: votes(win.slice(0, 8)), heldout, previous: rm, knobs: { members: 1, seed: 4 } });
  t.equal(fromVotes.metrics.pairs, 8, 'up/down votes of the training split train it as preferences');

  // Warm start: no new pairs → the same model; new pairs → continues from it (not from scratch).
  const same = await trainRewardModel({ model: m, window: [], heldout, previous: rm, knobs: { members: 3, seed: 4 } });
  t.equal(same.metrics.heldoutCorrect, metrics.heldoutCorrect, 'nothing to train: the previous model, unchanged');
  const mark = buffer.markRound(MODEL);
  ingest(buffer, preferenceEvents(48, 42, 0.1, 'rm2'));
  const small = buffer.window({ model: MODEL, types: ['pair'], sinceRound: mark.round, replayFraction: 0, seed: 2 }).examples;
  const warm = await trainRewardModel({ model: m, window: small, heldout, previous: rm, knobs: { members: 3, epochs: 1, seed: 4 } });
  const cold = await trainRewardModel({ model: m, window: small, heldout, previous: null, knobs: { members: 3, epochs: 1, seed: 4 } });
  t.ok(warm.metrics.heldoutAccuracy! > 0.75, `warm-started on ${small.length} new pairs: ${warm.metrics.heldoutAccuracy!.toFixed(3)}`);
  t.ok(warm.metrics.heldoutAccuracy! > cold.metrics.heldoutAccuracy!,
    `warm start keeps what it learned: ${warm.metrics.heldoutAccuracy!.toFixed(3)} > ${cold.metrics.heldoutAccuracy!.toFixed(3)} from scratch on the same ${small.length} pairs`);
  const other = await trainRewardModel({ model: m, window: small, heldout, previous: rm, knobs: { members: 3, epochs: 1, seed: 4, pooling: 'last' } });
  t.equal(other.rewardModel.pooling, 'last', 'a previous model of another shape is not warm-started from');

  // Out-of-distribution responses: the members disagree more.
  const rng = createRng(9);
  const inDist = Array.from({ length: 40 }, () => ({ p: prompt(rng), r: response(rng) }));
  const ood = Array.from({ length: 40 }, (_, i) => ({ p: prompt(rng), r: `${'0123456789'.repeat(3).slice(i % 10, (i % 10) + 12)} !!! ${'#$%&'.repeat(3)} ${i * 7919}` }));
  const sIn = await scoreWithRewardModel(m, rm, inDist.map((x) => x.p), inDist.map((x) => x.r));
  const sOut = await scoreWithRewardModel(m, rm, ood.map((x) => x.p), ood.map((x) => x.r));
  const spread = (xs: { std: number }[]): number => xs.reduce((a, x) => a + x.std, 0) / xs.length;
  t.ok(spread(sOut) > spread(sIn), `spread out of distribution ${spread(sOut).toFixed(4)} > in distribution ${spread(sIn).toFixed(4)}`);
});
