/**
 * Round guards on the tiny model and a real replay buffer: an absurd learning rate stops the
 * round at its KL budget (the kept candidate, measured again, is inside it); NaN in the deployed
 * adapter or an overflowing update discards the candidate with TRAINING_DIVERGED's reason and
 * leaves the deployed adapter untouched; a deployed version already at the cumulative budget
 * trains nothing; KTO rounds run on unpaired up/down rows.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint } from '../../daemon/model/hf-checkpoint.js';
import { writeTinyModel } from '../../daemon/model/tiny.js';
import { initLora, type LoraAdapter } from '../../daemon/model/lora.js';
import { createRng } from '../../daemon/base/random.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import type { FeedbackEvent } from '../../daemon/feedback/schema.js';
import { alignModel } from '../../daemon/align/context.js';
import { runRound } from '../../daemon/align/train-round.js';
import { heldoutKl } from '../../daemon/align/kl.js';
import type { TrainingKnobs } from '../../daemon/align/knobs.js';
import { MODEL, gold, ingest, preferenceEvents, prompt, response } from './synthetic.js';
import { type KnobLayer, policyKnobs } from './policy-knobs.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-guard-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeTinyModel(join(dir, 'model'));
const ckpt = loadCheckpoint(join(dir, 'model'));
const tok = ckpt.tokenizer!;
const lora = { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
const m = alignModel(join(dir, 'model'), lora, { threads: 2 });
const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction: 0.25 });
t.teardown(() => buffer.close());
ingest(buffer, preferenceEvents(96, 7, 0.1, 'g'));
const win = buffer.window({ model: MODEL, types: ['pair'], replayFraction: 0, seed: 1 }).examples;
const heldout = buffer.heldout(MODEL, ['pair'], 100);
const baseLayer: KnobLayer = {
  objective: { beta: 0.1, learning_rate: 1e-3, num_epochs: 1, batch_size: 8, micro_batch_size: 8, max_length: 48 },
  kl: { check_steps: 1, check_contexts: 16, sampled: { prompts: 4, max_new_tokens: 6, temperature: 1 } },
};
const knobs = (over: KnobLayer = {}): TrainingKnobs => policyKnobs(baseLayer, over);
const base = knobs();
const seed = 3;

function deployedAdapter(seed: number): LoraAdapter {
  const a = initLora(ckpt.spec, lora, seed);
  const rng = createRng(seed);
  for (const p of a.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.05, 0.05);
  return a;
}

t.test('an absurd learning rate stops the round at the per-round budget; a moderate one keeps an in-budget candidate', async (t) => {
  const deployed = deployedAdapter(1);
  const budget = 0.02;
  const absurd = await runRound({
    model: m, deployedAdapter: deployed, anchorAdapter: null, window: win, heldout, seed,
    knobs: knobs({ objective: { learning_rate: 0.5, max_grad_norm: 100 }, kl: { per_round: budget, cumulative: 10 } }),
  });
  t.equal(absurd.stopReason, 'kl_budget', absurd.reason ?? '');
  t.equal(absurd.stepsTaken, 1, 'stopped after the first step');
  t.equal(absurd.keptStep, 0, 'rolled back to the deployed state');
  t.ok(absurd.klChecks.some((c) => c.perRound > budget), 'the check saw the budget crossed');
  t.equal(absurd.candidate, null, 'nothing to gate');
  t.match(absurd.reason, /no step fitted/);

  const r = await runRound({
    model: m, deployedAdapter: deployed, anchorAdapter: null, window: win, heldout, seed,
    knobs: knobs({ objective: { learning_rate: 0.01 }, kl: { per_round: budget, cumulative: 10 } }),
  });
  t.equal(r.stopReason, 'kl_budget', r.reason ?? '');
  t.ok(r.keptStep > 0 && r.candidate !== null, `kept step ${r.keptStep} of ${r.stepsTaken}`);
  t.ok(r.stepsTaken < Math.ceil(win.length / 8), `stopped early: ${r.stepsTaken} steps`);
  const contexts = heldout.slice(0, 16).map((e) => tok.promptResponse(e.prompt, e.chosen!));
  const measured = await heldoutKl(m, r.candidate!, deployed, contexts, 16, 48);
  t.ok(measured <= budget && measured > 0, `kept candidate's KL ${measured} ≤ ${budget}`);
  t.ok(Math.abs(measured - r.kl.perRound) < 1e-4, 'reported KL is the kept state\'s');
});

t.test('the cumulative budget against the anchor stops a round too', async (t) => {
  const r = await runRound({
    model: m, deployedAdapter: deployedAdapter(2), anchorAdapter: null, window: win, heldout, seed,
    // per_round above cumulative, which no policy may set: it isolates the cumulative budget.
    knobs: { ...knobs({ objective: { learning_rate: 0.05 } }), klBudget: { perRound: 10, cumulative: 0.05 } },
  });
  t.equal(r.stopReason, 'kl_budget');
  t.ok(r.kl.cumulative <= 0.05, `cumulative ${r.kl.cumulative}`);
  const far = await runRound({
    model: m, deployedAdapter: deployedAdapter(2), anchorAdapter: null, window: win, heldout, seed,
    knobs: { ...base, klBudget: { perRound: 1, cumulative: 1e-6 } }, // per_round > cumulative, as above
  });
  t.equal(far.stopReason, 'kl_budget_exhausted');
  t.equal(far.candidate, null);
  t.equal(far.stepsTaken, 0);
});

t.test('NaN in the deployed adapter: candidate discarded, reason reported, deployed untouched', async (t) => {
  const deployed = deployedAdapter(3);
  const first = [...deployed.pairs.values()][0]!;
  first.b[5] = NaN;
  const before = [...deployed.pairs.values()].map((p) => Array.from(p.b));
  const r = await runRound({ model: m, deployedAdapter: deployed, anchorAdapter: null, window: win, heldout, knobs: base, seed });
  t.equal(r.stopReason, 'diverged');
  t.equal(r.candidate, null);
  t.match(r.reason, /NaN|not finite/);
  t.same([...deployed.pairs.values()].map((p) => Array.from(p.b)), before);
});

t.test('an update that overflows to Inf/NaN mid-round is caught and the candidate discarded', async (t) => {
  const deployed = deployedAdapter(4);
  const r = await runRound({
    model: m, deployedAdapter: deployed, anchorAdapter: null, window: win, heldout, seed,
    // A learning rate no policy may set (learning_rate ≤ 1): fault injection for the divergence guard.
    knobs: { ...knobs({ objective: { num_epochs: 3, max_grad_norm: 1e38 }, kl: { per_round: 1e30, cumulative: 1e30 } }), learningRate: 1e38 },
  });
  t.equal(r.stopReason, 'diverged', r.reason ?? '');
  t.equal(r.candidate, null);
  t.match(r.reason, /NaN|Infinity|not finite/);
});

t.test('KTO rounds train on unpaired up/down rows; z₀ is reported as kl', async (t) => {
  const kb = openBuffer({ path: join(dir, 'kto.sqlite'), heldoutFraction: 0.2 });
  t.teardown(() => kb.close());
  const rng = createRng(11);
  const events: FeedbackEvent[] = Array.from({ length: 80 }, (_, i) => {
    const resp = response(rng);
    return {
      event_id: `k-${i}`, ts: '2026-11-27T12:00:00Z', model: MODEL, model_version: 'v1', source: {}, prompt: prompt(rng),
      kind: 'binary' as const, response: resp, label: gold(resp) > 0.25 ? 'up' as const : 'down' as const,
    };
  });
  ingest(kb, events);
  const w = kb.window({ model: MODEL, types: ['kto'], replayFraction: 0, seed: 1 }).examples;
  t.ok(w.length > 30);
  const r = await runRound({
    model: m, deployedAdapter: null, anchorAdapter: null, window: w, heldout, seed,
    knobs: knobs({ objective: { loss_type: 'kto', learning_rate: 3e-3, num_epochs: 2 }, kl: { check_steps: 4, per_round: 1, cumulative: 2 } }),
  });
  t.not(r.candidate, null, r.reason ?? '');
  t.ok(r.steps.length > 0 && r.steps.every((s) => Number.isFinite(s.loss) && s.metrics['kl']! >= 0), 'finite losses, z₀ ≥ 0');
  const firstLoss = r.steps.slice(0, 3).reduce((s, x) => s + x.loss, 0) / 3;
  const lastLoss = r.steps.slice(-3).reduce((s, x) => s + x.loss, 0) / 3;
  t.ok(lastLoss < firstLoss, `KTO loss fell: ${firstLoss.toFixed(4)} → ${lastLoss.toFixed(4)}`);
});

t.test('adaptive β rises while the measured KL is over its target', async (t) => {
  const r = await runRound({
    model: m, deployedAdapter: deployedAdapter(5), anchorAdapter: null, window: win, heldout, seed,
    knobs: knobs({ objective: { learning_rate: 0.01, max_steps: 4 }, kl: { per_round: 10, cumulative: 10, adaptive_beta: { enabled: true, target: 1e-6, k_beta: 0.5, min_beta: 0.01, max_beta: 1 } } }),
  });
  t.equal(r.stopReason, 'completed', r.reason ?? '');
  t.ok(r.beta > 0.1, `β ${r.beta}`);
  const betas = r.steps.map((s) => s.beta);
  t.ok(betas.every((b, i) => i === 0 || b >= betas[i - 1]!) && betas.at(-1)! > betas[0]!, `β per step ${betas.join(', ')}`);
});

t.test('a deployed adapter of another LoRA shape is refused with the shapes named', async (t) => {
  const other = initLora(ckpt.spec, { ...lora, r: 2 }, 1);
  await t.rejects(runRound({ model: m, deployedAdapter: other, anchorAdapter: null, window: win, heldout, knobs: base, seed }), { code: 'CONFIG_INVALID', message: /LoRA shape/ });
});

t.test('with no held-out examples the guard measures KL on training contexts (and says so)', async (t) => {
  const r = await runRound({
    model: m, deployedAdapter: deployedAdapter(6), anchorAdapter: null, window: win, heldout: [], seed,
    knobs: knobs({ objective: { learning_rate: 0.5, max_grad_norm: 100 }, kl: { per_round: 0.02, cumulative: 10 } }),
  });
  t.equal(r.klContextSource, 'train');
  t.equal(r.stopReason, 'kl_budget');
  t.ok(r.klChecks.some((c) => c.perRound > 0.02), 'the budget is still enforced');
  t.equal(r.heldout, null, 'no held-out metrics without held-out pairs');
});
