/**
 * One incremental training round, composed of its parts:
 *   - the objective (objectives.ts, DPO or KTO): rows, reference log-probs, programs, feeds;
 *   - the micro-batch trainer (micro-batch-trainer.ts): accumulate, then one AdamW step;
 *   - the KL guard (kl-guard.ts): budgets, snapshot/rollback, pace stop, adaptive β.
 * Reference = the deployed version (base + deployed adapter); the candidate warm-starts from it
 * and trains on the window (new examples + replay; held-out never trained on); NaN/Inf anywhere
 * discards the candidate (TRAINING_DIVERGED) and leaves the deployed untouched.
 */
import { AligndError } from '../base/errors.js';
import { type Logger, silentLogger } from '../base/log.js';
import { createRng } from '../base/random.js';
import { type InputDecls, initState } from '../engine/index.js';
import type { LoraAdapter } from '../model/lora.js';
import { loraHostTensors, loraShapeKey } from '../model/model.js';
import type { PromptResponseTokens } from '../model/tokenizer.js';
import type { Example } from '../store/buffer.js';
import { diverged, finiteAdapter, stateToAdapter } from './candidate-state.js';
import type { AlignModel } from './context.js';
import { type KlCheck, klGuard } from './kl-guard.js';
import type { TrainingKnobs } from './knobs.js';
import { type MicroBatch, microBatchTrainer } from './micro-batch-trainer.js';
import { type Skipped, type TrainingObjective, dpoTraining, ktoTraining, optimizerOf, tokenizePairs, tokenizerOf } from './objectives.js';
import { pairLogRatios, sampledSequenceKl } from './policy-logps.js';
import { learningRate } from './schedule.js';

export interface RoundInput {
  model: AlignModel;
  /** The deployed adapter (this round's reference and warm start); null = the base model is deployed. */
  deployedAdapter: LoraAdapter | null;
  /** The cumulative-budget anchor (a pinned version); null = the base model. */
  anchorAdapter: LoraAdapter | null;
  /** Training examples: the buffer's window() (pairs for dpo, kto rows for kto). */
  window: Example[];
  /** Held-out examples (buffer.heldout()): KL contexts and held-out metrics; never trained on. */
  heldout: Example[];
  /** From the policy (trainingKnobs): validated there, used as is. */
  knobs: TrainingKnobs;
  /** The round's seed (the loop passes the round number): LoRA init, batch order, sampled KL. */
  seed: number;
  log?: Logger;
  /** Where the candidate is checkpointed (PEFT adapter + round.json); omitted = not written. */
  outDir?: string;
  /** Window marks etc. copied into the resumable metadata. */
  meta?: Record<string, unknown>;
  /** Shutdown: checked before every optimizer step; an aborted round throws and writes nothing. */
  signal?: AbortSignal;
}

export interface StepLog { step: number; lr: number; beta: number; loss: number; gradNorm: number; metrics: Record<string, number> }

export type StopReason = 'completed' | 'kl_budget' | 'kl_budget_exhausted' | 'diverged' | 'no_data';

/** What one training round produced (candidate, stop reason, steps, KL); the loop records a `RoundOutcome` from it. */
export interface TrainingResult {
  /** The candidate adapter, or null when discarded / nothing trained. */
  candidate: LoraAdapter | null;
  candidateDir: string | null;
  stopReason: StopReason;
  /** Why the candidate was discarded or the round stopped early, for people. */
  reason: string | null;
  stepsTaken: number;
  /** Steps of the kept state (≤ stepsTaken when a budget rolled the last ones back). */
  keptStep: number;
  steps: StepLog[];
  klChecks: KlCheck[];
  kl: { perRound: number; cumulative: number; sampledSequence: number | null };
  beta: number;
  heldout: { pairs: number; 'rewards/accuracies': number; 'rewards/margins': number } | null;
  trainedExampleIds: number[];
  skipped: Skipped[];
  /** Where the KL contexts and sampled-KL prompts came from ('train' only when no held-out examples exist). */
  klContextSource: 'heldout' | 'train';
}

export async function runRound(input: RoundInput): Promise<TrainingResult> {
  const o = input.knobs.objective;
  const c = { model: input.model, deployed: input.deployedAdapter, knobs: input.knobs };
  return o.kind === 'dpo' ? trainRound(input, dpoTraining(c, o)) : trainRound(input, ktoTraining(c, o));
}

async function trainRound<Row extends { id: number }, I extends InputDecls>(input: RoundInput, objective: TrainingObjective<Row, I>): Promise<TrainingResult> {
  const { knobs: k, seed, model: m } = input;
  const log = input.log ?? silentLogger;
  // null = the base model (no adapter program work on that side).
  const deployed = input.deployedAdapter;
  const anchor = input.anchorAdapter;
  // Warm start: the deployed adapter's values; with no deployed adapter, PEFT's init (B = 0) so
  // the candidate starts exactly at the base model but A carries gradient into B.
  const start = deployed ?? m.freshAdapter(seed);
  const skipped: Skipped[] = [];
  const result: TrainingResult = {
    candidate: null, candidateDir: null, stopReason: 'completed', reason: null, stepsTaken: 0, keptStep: 0, steps: [], klChecks: [],
    kl: { perRound: 0, cumulative: 0, sampledSequence: null }, beta: k.beta, heldout: null, trainedExampleIds: [], skipped, klContextSource: 'heldout',
  };
  const train = input.window.filter((e) => !e.heldout);
  const rows = objective.tokenize(train, skipped);
  const heldPairs = tokenizePairs(m, input.heldout, []);
  // KL contexts: held-out examples; with none, training examples (KL is taken under the
  // policy's own distribution, so any real context measures the drift; held-out is preferred).
  const contextSource = input.heldout.length > 0 ? input.heldout : train;
  result.klContextSource = input.heldout.length > 0 ? 'heldout' : 'train';
  const contexts = klContexts(m, contextSource, k.klContexts);
  if (rows.length === 0) {
    result.stopReason = 'no_data';
    result.reason = `no ${objective.rowsName} in the window`;
    return result;
  }
  result.trainedExampleIds = rows.map((r) => r.id);
  if (deployed !== null && loraShapeKey(deployed.config) !== loraShapeKey(m.lora)) {
    throw new AligndError('CONFIG_INVALID', `the deployed adapter's LoRA shape ${loraShapeKey(deployed.config)} differs from the policy's ${loraShapeKey(m.lora)}`, {
      action: 'a candidate warm-starts from the deployed adapter: keep lora.r, lora.alpha, lora.use_rslora and lora.target_modules in the policy, or deploy the base (no adapter) first so the next round starts fresh',
    });
  }

  try {
    if ((deployed !== null && !finiteAdapter(deployed)) || (anchor !== null && !finiteAdapter(anchor))) throw diverged('the deployed or anchor adapter holds NaN/Inf values');
    // Reference log-probs: once per round, cached per example.
    const reference = await objective.referenceLogps(rows);
    for (const [id, v] of reference) if (!v.every(Number.isFinite)) throw diverged(`reference log-probs of example ${id} are not finite`);

    const state = initState(loraHostTensors(start));
    const trainer = microBatchTrainer(await objective.program(true), await m.apply(optimizerOf(k)), state);
    const total = k.maxSteps ?? Math.max(1, Math.round(k.numTrainEpochs * Math.ceil(rows.length / k.batchSize)));
    const warmup = Math.floor(k.warmupRatio * total);

    const guard = klGuard({ model: m, deployed, anchor, start, contexts, knobs: k });
    const exhausted = await guard.begin(state);
    result.klChecks = guard.checks;
    if (exhausted !== null) {
      result.stopReason = exhausted.stopReason;
      result.reason = exhausted.reason;
      result.kl = { perRound: guard.kept.perRound, cumulative: guard.kept.cumulative, sampledSequence: null };
      return result;
    }

    const batches = batchOrder(rows.length, k.batchSize, seed);
    for (let step = 0; step < total; step++) {
      if (input.signal?.aborted === true) throw new AligndError('ROUND_ABANDONED', `round abandoned at step ${step}: shutting down`, { action: 'none: the round is redone after the restart' });
      const lr = learningRate(step, total, k.learningRate, k.lrSchedulerType, warmup);
      const beta = guard.beta;
      const idx = batches.next();
      const microBatches: MicroBatch<I>[] = [];
      for (let i = 0; i < idx.length; i += k.microBatchSize) {
        const mb = idx.slice(i, i + k.microBatchSize).map((j) => rows[j]!);
        microBatches.push(() => objective.feeds(mb, reference, beta));
      }
      const res = await trainer.step(microBatches, lr);
      result.stepsTaken = step + 1;
      result.steps.push({ step: step + 1, lr, beta, loss: res.loss, gradNorm: res.gradNorm, metrics: res.metrics });
      log.debug('align step', { step: step + 1, loss: res.loss, grad_norm: res.gradNorm, lr, ...res.metrics });

      const last = step + 1 === total;
      if (!guard.due(step + 1, last)) continue;
      const stop = await guard.check(state, step + 1, last);
      // TRL-style `kl` on the step it was measured at (exact, nats/token, vs the deployed version).
      result.steps[result.steps.length - 1]!.metrics['kl'] = guard.checks.at(-1)!.perRound;
      result.keptStep = guard.kept.step;
      result.kl.perRound = guard.kept.perRound;
      result.kl.cumulative = guard.kept.cumulative;
      if (stop !== null) {
        result.stopReason = stop.stopReason;
        result.reason = stop.reason;
        break;
      }
    }
    result.beta = guard.beta;
    if (result.keptStep === 0) {
      // Not even the first step fitted the budget: the "candidate" would be the deployed version.
      result.reason = `${result.reason ?? ''}; no step fitted the KL budget, so there is no candidate to gate`;
      log.info('align round kept no step', { reason: result.reason });
      return result;
    }
    const candidate = stateToAdapter(state, start);
    if (!finiteAdapter(candidate)) throw diverged('candidate adapter values are not finite');
    result.candidate = candidate;

    // Held-out implicit-reward metrics against the deployed reference (TRL's eval rewards/*).
    if (heldPairs.length > 0) {
      const d = await pairLogRatios(m, candidate, deployed, heldPairs, 2 * k.microBatchSize, k.maxLength);
      let acc = 0, margin = 0;
      for (const x of d) {
        if (x > 0) acc++;
        margin += k.beta * x;
      }
      result.heldout = { pairs: heldPairs.length, 'rewards/accuracies': acc / heldPairs.length, 'rewards/margins': margin / heldPairs.length };
    }
    // Sampled sequence-level KL on generations from the candidate.
    const tok = tokenizerOf(m);
    const prompts = contextSource.slice(0, k.sampledKl.prompts).map((e) => tok.encodePrompt(e.prompt));
    if (prompts.length > 0 && k.sampledKl.maxNewTokens > 0) {
      const s = await sampledSequenceKl(m, candidate, deployed, prompts, { maxNewTokens: k.sampledKl.maxNewTokens, temperature: k.sampledKl.temperature, seed: seed + 1 });
      if (!Number.isFinite(s.kl)) throw diverged('sampled sequence KL is not finite');
      result.kl.sampledSequence = s.kl;
    }
  } catch (err) {
    if (err instanceof AligndError && err.code === 'TRAINING_DIVERGED') {
      log.warn('align round diverged; candidate discarded', { reason: err.message });
      result.candidate = null;
      result.stopReason = 'diverged';
      result.reason = err.message;
      return result;
    }
    throw err;
  }
  if (input.outDir !== undefined && result.candidate !== null) {
    const { writeCandidate } = await import('./candidate-dir.js');
    result.candidateDir = writeCandidate(input.outDir, m, result, k, { seed, ...input.meta });
  }
  log.info('align round done', { stop: result.stopReason, steps: result.stepsTaken, kept: result.keptStep, kl_round: result.kl.perRound, kl_cumulative: result.kl.cumulative });
  return result;
}

/** The first `n` held-out (or training) examples with a response, tokenised, for the exact KL. */
function klContexts(m: AlignModel, examples: Example[], n: number): PromptResponseTokens[] {
  const tok = tokenizerOf(m);
  const contexts: PromptResponseTokens[] = [];
  for (const e of examples) {
    if (contexts.length >= n) break;
    const resp = e.chosen ?? e.response;
    if (resp === null) continue;
    try { contexts.push(tok.promptResponse(e.prompt, resp)); } catch { /* not a usable context; the next one is */ }
  }
  return contexts;
}

/** Row indices of each step's batch: epochs in a seeded shuffled order; a window smaller than a batch is one batch. */
function batchOrder(n: number, batchSize: number, seed: number): { next(): number[] } {
  let order: number[] = [];
  let epoch = 0;
  return {
    next() {
      const idx: number[] = [];
      while (idx.length < batchSize) {
        if (order.length === 0) order = shuffled(Array.from({ length: n }, (_, i) => i), seed * 7919 + epoch++);
        idx.push(order.shift()!);
        if (n < batchSize && idx.length === n) break;
      }
      return idx;
    },
  };
}

function shuffled<T>(xs: T[], seed: number): T[] {
  const rng = createRng(seed);
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}
