/**
 * The round's parts on the tiny model, each alone: the micro-batch trainer (two micro-batches of
 * four pairs make the same step as one of eight: the same mean loss, gradient norm and metrics),
 * and the KL guard (step 0 measures against the deployed version and the anchor; a check over the
 * budget rolls the train state back to the kept snapshot exactly and says why; a deployed version
 * already at the cumulative budget stops the round before it starts).
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initState, numbers } from '../../daemon/engine/index.js';
import { writeTinyModel } from '../../daemon/model/tiny.js';
import { initLora, type LoraAdapter } from '../../daemon/model/lora.js';
import { loraHostTensors } from '../../daemon/model/model.js';
import { createRng } from '../../daemon/base/random.js';
import { alignModel } from '../../daemon/align/context.js';
import { klGuard } from '../../daemon/align/kl-guard.js';
import { microBatchTrainer } from '../../daemon/align/micro-batch-trainer.js';
import { type PairRow, dpoTraining, optimizerOf } from '../../daemon/align/objectives.js';
import { policyKnobs } from './policy-knobs.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-round-parts-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeTinyModel(dir);
const lora = { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
const m = alignModel(dir, lora, { threads: 2 });
const tok = m.ckpt.tokenizer!;

function adapter(seed: number, scale: number): LoraAdapter {
  const a = initLora(m.ckpt.spec, lora, seed);
  const rng = createRng(seed + 1);
  for (const p of a.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-scale, scale);
  return a;
}

const rng = createRng(5);
const word = (): string => Array.from({ length: 3 + Math.floor(rng.next() * 4) }, () => 'abcdefgh'[Math.floor(rng.next() * 8)]).join('');
const pairs: PairRow[] = Array.from({ length: 8 }, (_, id) => {
  const prompt = `Write ${word()}`;
  return { id, chosen: tok.promptResponse(prompt, `${word()} ${word()}`), rejected: tok.promptResponse(prompt, word()) };
});

t.test('micro-batch trainer: two micro-batches of 4 pairs make the step one micro-batch of 8 makes', async (t) => {
  const k = policyKnobs({ objective: { batch_size: 8, micro_batch_size: 4, learning_rate: 1e-2 } });
  if (k.objective.kind !== 'dpo') throw new Error('a DPO policy');
  const deployed = adapter(1, 0.05);
  const dpo = dpoTraining({ model: m, deployed, knobs: k }, k.objective);
  const reference = await dpo.referenceLogps(pairs);
  const grad = await dpo.program(true);
  const apply = await m.apply(optimizerOf(k));
  const stepWith = async (chunks: PairRow[][]) => {
    const state = initState(loraHostTensors(deployed));
    const before = numbers(Object.values(state.params)[0]!);
    const r = await microBatchTrainer(grad, apply, state).step(chunks.map((c) => () => dpo.feeds(c, reference, 0.1)), 1e-2);
    return { r, moved: numbers(Object.values(state.params)[0]!).some((x, i) => x !== before[i]) };
  };
  const two = await stepWith([pairs.slice(0, 4), pairs.slice(4)]);
  const one = await stepWith([pairs]);
  const close = (a: number, b: number): boolean => Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b));
  t.ok(close(two.r.loss, one.r.loss), `mean loss ${two.r.loss} vs ${one.r.loss}`);
  t.ok(close(two.r.gradNorm, one.r.gradNorm), `gradient norm of the mean gradient ${two.r.gradNorm} vs ${one.r.gradNorm}`);
  t.ok(close(two.r.metrics['rewards/margins']!, one.r.metrics['rewards/margins']!), 'metrics are means over the micro-batches');
  t.ok(two.moved && one.moved, 'both steps updated the parameters');
});

t.test('KL guard: step 0, a rollback to the kept snapshot, and a deployed version already over the cumulative budget', async (t) => {
  const contexts = pairs.map((p) => p.chosen);
  const deployed = adapter(2, 0.05);
  const k = policyKnobs({ kl: { per_round: 0.01, cumulative: 1, check_steps: 1 } });
  const state = initState(loraHostTensors(deployed));
  const guard = klGuard({ model: m, deployed, anchor: null, start: deployed, contexts, knobs: k });
  t.equal(await guard.begin(state), null, 'in budget at the start');
  t.equal(guard.checks[0]!.step, 0);
  t.ok(Math.abs(guard.checks[0]!.perRound) < 1e-6, 'the warm start is the reference: per-round KL 0');
  t.ok(guard.checks[0]!.cumulative > 0, 'the deployed version has drifted from the base (the anchor)');
  t.same(guard.kept, { step: 0, perRound: guard.checks[0]!.perRound, cumulative: guard.checks[0]!.cumulative });

  const kept = Object.fromEntries(Object.entries(state.params).map(([name, v]) => [name, numbers(v)]));
  const far = loraHostTensors(adapter(3, 2));
  const moved = initState(far);
  for (const name of Object.keys(state.params)) state.params[name] = moved.params[name]!;
  t.equal(guard.due(1, false), true, 'check_steps 1: every step');
  const stop = await guard.check(state, 1, false);
  t.equal(stop?.stopReason, 'kl_budget');
  t.match(stop?.reason, /exceeds the budget 0\.01 \/ 1; kept step 0/);
  t.ok(guard.checks[1]!.perRound > 0.01, `measured ${guard.checks[1]!.perRound} over the budget`);
  t.same(Object.fromEntries(Object.entries(state.params).map(([name, v]) => [name, numbers(v)])), kept, 'rolled back to the snapshot exactly');
  t.equal(guard.kept.step, 0);

  const exhausted = klGuard({ model: m, deployed, anchor: null, start: deployed, contexts, knobs: policyKnobs({ kl: { per_round: 1e-9, cumulative: 1e-9 } }) });
  const s2 = await exhausted.begin(initState(loraHostTensors(deployed)));
  t.equal(s2?.stopReason, 'kl_budget_exhausted');
  t.match(s2?.reason, /already .* nats\/token from the anchor/);
});
