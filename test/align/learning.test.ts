/**
 * Learning end to end on the tiny model (takes ~1–3 minutes on 2 cores): preference events with a
 * hidden gold rule and 10% label noise go into a real replay buffer; three incremental DPO rounds,
 * each warm-started from the previous round's candidate (the "deployed" version) with that
 * version as the reference. After the rounds the held-out implicit-reward accuracy against the
 * gold labels exceeds 0.8, the gold reward of sampled responses rises, and every round's KL stays
 * under its per-round and cumulative budgets. The last round's candidate is written as a PEFT
 * adapter with resumable metadata and reads back.
 */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint } from '../../daemon/model/hf-checkpoint.js';
import { writeTinyModel } from '../../daemon/model/tiny.js';
import { readPeftAdapter } from '../../daemon/model/peft.js';
import type { LoraAdapter } from '../../daemon/model/lora.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { alignModel } from '../../daemon/align/context.js';
import { runRound } from '../../daemon/align/train-round.js';
import { sampleResponses, sequenceLogps } from '../../daemon/align/policy-logps.js';
import { MODEL, gold, ingest, preferenceEvents } from './synthetic.js';
import { policyKnobs } from './policy-knobs.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-learn-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeTinyModel(join(dir, 'model'));
const ckpt = loadCheckpoint(join(dir, 'model'));
const tok = ckpt.tokenizer!;
const lora = { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
const m = alignModel(join(dir, 'model'), lora, { threads: 2 });

const knobs = policyKnobs({
  objective: {
    loss_type: 'sigmoid', beta: 0.1, learning_rate: 3e-3, lr_scheduler_type: 'cosine', warmup_ratio: 0.05,
    num_epochs: 2, batch_size: 16, micro_batch_size: 8, max_grad_norm: 1, max_length: 64,
  },
  kl: { per_round: 0.5, cumulative: 1.5, check_steps: 5, check_contexts: 32, sampled: { prompts: 16, max_new_tokens: 12, temperature: 1 } },
});

async function goldOfSamples(adapter: LoraAdapter | null, prompts: string[], seed: number): Promise<number> {
  const ids = prompts.map((p) => tok.encodePrompt(p));
  const outs = await sampleResponses(m, adapter, ids, { maxNewTokens: 12, temperature: 1, seed });
  const texts = outs.map((o) => tok.decode(o, { skipSpecialTokens: true }));
  return texts.reduce((s, x) => s + gold(x), 0) / texts.length;
}

t.test('three DPO rounds learn the hidden rule within their KL budgets', async (t) => {
  const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction: 0.2 });
  t.teardown(() => buffer.close?.());
  const probe = Array.from({ length: 48 }, (_, i) => `Write letters ${i}`);
  let deployed: LoraAdapter | null = null;
  const goldBefore = await goldOfSamples(null, probe, 5);
  let lastRound = undefined as number | undefined;
  let lastDir = '';
  for (let round = 1; round <= 3; round++) {
    ingest(buffer, preferenceEvents(160, 100 + round, 0.1, `r${round}`));
    const mark = buffer.markRound(MODEL);
    const win = buffer.window({ model: MODEL, types: ['pair'], sinceRound: lastRound, replayFraction: 0.25, seed: round });
    const heldout = buffer.heldout(MODEL, ['pair'], 200);
    t.ok(win.examples.every((e) => !e.heldout) && heldout.every((e) => e.heldout), 'held-out examples never in the training window');
    lastDir = join(dir, `round-${round}`);
    const r = await runRound({
      model: m, deployedAdapter: deployed, anchorAdapter: null, window: win.examples, heldout, knobs, seed: 1, outDir: lastDir,
      meta: { round: mark.round, max_example_id: mark.maxExampleId, max_event_seq: mark.maxEventSeq, new_count: win.newCount, replay_count: win.replayCount },
    });
    t.not(r.candidate, null, `round ${round}: candidate (${r.stopReason}${r.reason ? `: ${r.reason}` : ''})`);
    for (const c of r.klChecks) {
      t.ok(c.perRound <= 0.5 || c.step > r.keptStep, `round ${round} step ${c.step}: per-round KL ${c.perRound.toFixed(4)} ≤ 0.5 (or rolled back)`);
    }
    t.ok(r.kl.perRound <= 0.5 && r.kl.cumulative <= 1.5, `round ${round}: kept KL ${r.kl.perRound.toFixed(4)} / ${r.kl.cumulative.toFixed(4)} within budgets`);
    t.ok(r.steps.some((s) => s.metrics['kl'] !== undefined) && r.steps.every((s) => s.metrics['rewards/accuracies'] !== undefined), 'steps carry TRL metrics and kl');
    t.ok(r.kl.sampledSequence !== null && Number.isFinite(r.kl.sampledSequence), `round ${round}: sampled sequence KL ${r.kl.sampledSequence}`);
    t.comment(`round ${round}: steps ${r.stepsTaken} kept ${r.keptStep} stop ${r.stopReason} loss ${r.steps.at(-1)?.loss.toFixed(4)} `
      + `held-out acc (vs reference) ${r.heldout?.['rewards/accuracies'].toFixed(3)} KL ${r.kl.perRound.toFixed(4)}/${r.kl.cumulative.toFixed(4)}`);
    deployed = r.candidate!;
    lastRound = mark.round;
  }
  // Implicit reward against the base (the anchor), scored with the gold labels of held-out pairs.
  const held = buffer.heldout(MODEL, ['pair'], 500);
  const seqs = held.flatMap((e) => [tok.promptResponse(e.prompt, e.chosen!), tok.promptResponse(e.prompt, e.rejected!)]);
  const pol = await sequenceLogps(m, deployed!, seqs);
  const ref = await sequenceLogps(m, null, seqs);
  let correct = 0;
  held.forEach((e, i) => {
    const implicit = (pol[2 * i]! - ref[2 * i]!) - (pol[2 * i + 1]! - ref[2 * i + 1]!);
    const goldSays = gold(e.chosen!) > gold(e.rejected!);
    if ((implicit > 0) === goldSays) correct++;
  });
  const acc = correct / held.length;
  t.ok(acc > 0.8, `held-out implicit-reward accuracy vs gold ${acc.toFixed(3)} over ${held.length} pairs > 0.8`);
  const goldAfter = await goldOfSamples(deployed!, probe, 5);
  t.ok(goldAfter > goldBefore + 0.02, `gold reward of sampled responses rose: ${goldBefore.toFixed(4)} → ${goldAfter.toFixed(4)}`);

  const meta = JSON.parse(readFileSync(join(lastDir, 'round.json'), 'utf8')) as Record<string, unknown>;
  t.equal(meta['round'], 3);
  t.ok(Array.isArray(meta['trained_example_ids']) && (meta['trained_example_ids'] as number[]).length > 0);
  t.ok(existsSync(join(lastDir, 'adapter', 'adapter_config.json')));
  const back = readPeftAdapter(join(lastDir, 'adapter'), ckpt.spec);
  const p0 = [...deployed!.pairs.values()][0]!;
  t.same(Array.from([...back.pairs.values()][0]!.b), Array.from(p0.b), 'written adapter reads back');
});
