/**
 * One incremental training round:
 *   reference = the deployed version (base + deployed adapter); its log-probs are computed once
 *   per round by the inference program and cached per example; the candidate warm-starts from the
 *   deployed adapter and trains on the window (new examples + replay; held-out never trained on);
 *   exact KL on held-out contexts every N steps against the deployed version (per-round budget)
 *   and the anchor (cumulative budget); the round stops early keeping the last in-budget state;
 *   NaN/Inf anywhere discards the candidate (TRAINING_DIVERGED) and leaves the deployed untouched.
 */
import * as ort from 'onnxruntime-node';
import { AligndError, errorMessage } from '../base/errors.js';
import { type Logger, silentLogger } from '../base/log.js';
import { type OrtTensor, type TrainState, accumulate, applyAccumulated, f32, i64, initAccumulator, initState, trainStep } from '../engine/index.js';
import { adapterFromTensors, batchFeeds, loraHostTensors, loraShapeKey } from '../model/model.js';
import { packLogProbBatch } from '../model/batch.js';
import type { LoraAdapter } from '../model/lora.js';
import type { PromptResponseTokens } from '../model/tokenizer.js';
import type { Example } from '../store/buffer.js';
import type { AlignModel } from './context.js';
import { sampledSequenceKl, sequenceLogps } from './policy-logps.js';
import type { TrainingKnobs } from './knobs.js';
import { adaptBeta, learningRate } from './schedule.js';
import { heldoutKl } from './kl.js';
import { createRng } from '../base/random.js';

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
export interface KlCheck { step: number; perRound: number; cumulative: number; beta: number }

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
  skipped: { id: number; why: string }[];
  /** Where the KL contexts and sampled-KL prompts came from ('train' only when no held-out examples exist). */
  klContextSource: 'heldout' | 'train';
}

interface PairRow { id: number; chosen: PromptResponseTokens; rejected: PromptResponseTokens }
interface KtoRow { id: number; prompt: number[]; own: PromptResponseTokens; desirable: boolean }

function tokenizePairs(m: AlignModel, exs: Example[], skipped: { id: number; why: string }[]): PairRow[] {
  const tok = m.ckpt.tokenizer;
  if (tok === null) throw new AligndError('MODEL_INVALID', 'the base model has no tokenizer.json', { input: m.ckpt.dir, action: 'copy the model\'s tokenizer files into its directory' });
  const out: PairRow[] = [];
  for (const e of exs) {
    if (e.type !== 'pair' || e.chosen === null || e.rejected === null) continue;
    try {
      out.push({ id: e.id, chosen: tok.promptResponse(e.prompt, e.chosen), rejected: tok.promptResponse(e.prompt, e.rejected) });
    } catch (err) { skipped.push({ id: e.id, why: errorMessage(err) }); }
  }
  return out;
}

function tokenizeKto(m: AlignModel, exs: Example[], skipped: { id: number; why: string }[]): KtoRow[] {
  const tok = m.ckpt.tokenizer!;
  const out: KtoRow[] = [];
  for (const e of exs) {
    if (e.type !== 'kto' || e.response === null || (e.label !== 'up' && e.label !== 'down')) continue;
    try {
      const own = tok.promptResponse(e.prompt, e.response);
      out.push({ id: e.id, prompt: own.ids.slice(0, own.promptLength), own, desirable: e.label === 'up' });
    } catch (err) { skipped.push({ id: e.id, why: errorMessage(err) }); }
  }
  return out;
}

function diverged(what: string): AligndError {
  return new AligndError('TRAINING_DIVERGED', what, { action: 'the candidate was discarded and the deployed version is untouched; lower objective.learning_rate in the policy or check the feedback window for bad data' });
}

const stateToAdapter = (state: TrainState, like: LoraAdapter): LoraAdapter => adapterFromTensors(like, state.params);

const finiteAdapter = (a: LoraAdapter): boolean => [...a.pairs.values()].every((p) => p.a.every(Number.isFinite) && p.b.every(Number.isFinite));

function shuffled<T>(xs: T[], seed: number): T[] {
  const rng = createRng(seed);
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export async function runRound(input: RoundInput): Promise<TrainingResult> {
  const k = input.knobs;
  const seed = input.seed;
  const objective = k.objective.kind;
  const m = input.model;
  const log = input.log ?? silentLogger;
  const pad = m.model.padId;
  const skipped: { id: number; why: string }[] = [];
  // null = the base model (no adapter program work on that side).
  const deployed = input.deployedAdapter;
  const anchor = input.anchorAdapter;
  // Warm start: the deployed adapter's values; with no deployed adapter, PEFT's init (B = 0) so
  // the candidate starts exactly at the base model but A carries gradient into B.
  const start = input.deployedAdapter ?? m.freshAdapter(seed);
  const result: TrainingResult = {
    candidate: null, candidateDir: null, stopReason: 'completed', reason: null, stepsTaken: 0, keptStep: 0, steps: [], klChecks: [],
    kl: { perRound: 0, cumulative: 0, sampledSequence: null }, beta: k.beta, heldout: null, trainedExampleIds: [], skipped, klContextSource: 'heldout',
  };
  const train = input.window.filter((e) => !e.heldout);
  const pairs = objective === 'dpo' ? tokenizePairs(m, train, skipped) : [];
  const kto = objective === 'kto' ? tokenizeKto(m, train, skipped) : [];
  const n = objective === 'dpo' ? pairs.length : kto.length;
  const heldPairs = tokenizePairs(m, input.heldout, []);
  const tok = m.ckpt.tokenizer!;
  // KL contexts: held-out examples; with none, training examples (KL is taken under the
  // policy's own distribution, so any real context measures the drift; held-out is preferred).
  const contextSource = input.heldout.length > 0 ? input.heldout : train;
  result.klContextSource = input.heldout.length > 0 ? 'heldout' : 'train';
  const contexts: PromptResponseTokens[] = [];
  for (const e of contextSource) {
    if (contexts.length >= k.klContexts) break;
    const resp = e.chosen ?? e.response;
    if (resp === null) continue;
    try { contexts.push(tok.promptResponse(e.prompt, resp)); } catch { /* skipped */ }
  }
  if (n === 0) {
    result.stopReason = 'no_data';
    result.reason = `no ${objective === 'dpo' ? 'pairs' : 'KTO rows'} in the window`;
    return result;
  }
  result.trainedExampleIds = (objective === 'dpo' ? pairs : kto).map((r) => r.id);
  if (input.deployedAdapter !== null && loraShapeKey(input.deployedAdapter.config) !== loraShapeKey(m.lora)) {
    throw new AligndError('CONFIG_INVALID', `the deployed adapter's LoRA shape ${loraShapeKey(input.deployedAdapter.config)} differs from the policy's ${loraShapeKey(m.lora)}`, {
      action: 'a candidate warm-starts from the deployed adapter: keep lora.r, lora.alpha, lora.use_rslora and lora.target_modules in the policy, or deploy the base (no adapter) first so the next round starts fresh',
    });
  }

  try {
    if ((deployed !== null && !finiteAdapter(deployed)) || (anchor !== null && !finiteAdapter(anchor))) throw diverged('the deployed or anchor adapter holds NaN/Inf values');
    // Reference log-probs: once per round, cached per example.
    const refCache = new Map<number, number[]>();
    if (objective === 'dpo') {
      const lp = await sequenceLogps(m, deployed, pairs.flatMap((p) => [p.chosen, p.rejected]), 2 * k.microBatchSize, k.maxLength);
      pairs.forEach((p, i) => refCache.set(p.id, [lp[2 * i]!, lp[2 * i + 1]!]));
    } else {
      const lp = await sequenceLogps(m, deployed, kto.map((r) => r.own), 2 * k.microBatchSize, k.maxLength);
      kto.forEach((r, i) => refCache.set(r.id, [lp[i]!]));
    }
    for (const [id, v] of refCache) if (!v.every(Number.isFinite)) throw diverged(`reference log-probs of example ${id} are not finite`);

    const optimizer = { maxGradNorm: k.maxGradNorm, weightDecay: k.weightDecay };
    const micro = k.batchSize / k.microBatchSize;
    const prog = k.objective.kind === 'dpo'
      ? await m.dpo({ lossType: k.objective.lossType, labelSmoothing: k.objective.labelSmoothing, rpoAlpha: k.objective.rpoAlpha, optimizer, accumulate: micro > 1 })
      : await m.kto({ desirableWeight: k.objective.desirableWeight, undesirableWeight: k.objective.undesirableWeight, optimizer, accumulate: micro > 1 });
    const apply = micro > 1 ? await m.apply(optimizer) : null;
    const state = initState(loraHostTensors(start));

    const stepsPerEpoch = Math.ceil(n / k.batchSize);
    const total = k.maxSteps ?? Math.max(1, Math.round(k.numTrainEpochs * stepsPerEpoch));
    const warmup = Math.floor(k.warmupRatio * total);
    let beta = k.beta;

    // KL at the start: per round is 0 by construction (warm start = reference) unless there was
    // no deployed adapter; the cumulative one is the deployed version's drift from the anchor.
    const startAdapter = stateToAdapter(state, start);
    let lastR = await heldoutKl(m, startAdapter, deployed, contexts, 2 * k.microBatchSize, k.maxLength);
    let lastC = await heldoutKl(m, startAdapter, anchor, contexts, 2 * k.microBatchSize, k.maxLength);
    result.klChecks.push({ step: 0, perRound: lastR, cumulative: lastC, beta });
    if (lastC >= k.klBudget.cumulative) {
      result.stopReason = 'kl_budget_exhausted';
      result.reason = `the deployed version is already ${lastC.toFixed(4)} nats/token from the anchor (cumulative budget ${k.klBudget.cumulative}); nothing trained`;
      result.kl = { perRound: lastR, cumulative: lastC, sampledSequence: null };
      return result;
    }
    let snapshot = { params: copyParams(state), step: 0, perRound: lastR, cumulative: lastC };

    let order: number[] = [];
    let epoch = 0;
    const nextIndices = (): number[] => {
      const idx: number[] = [];
      while (idx.length < k.batchSize) {
        if (order.length === 0) order = shuffled(Array.from({ length: n }, (_, i) => i), seed * 7919 + epoch++);
        idx.push(order.shift()!);
        if (n < k.batchSize && idx.length === n) break;
      }
      return idx;
    };

    for (let step = 0; step < total; step++) {
      if (input.signal?.aborted === true) throw new AligndError('ROUND_ABANDONED', `round abandoned at step ${step}: shutting down`, { action: 'none: the round is redone after the restart' });
      const lr = learningRate(step, total, k.learningRate, k.lrSchedulerType, warmup);
      const idx = nextIndices();
      const chunks: number[][] = [];
      for (let i = 0; i < idx.length; i += k.microBatchSize) chunks.push(idx.slice(i, i + k.microBatchSize));
      let res;
      if (micro === 1 || chunks.length === 1) {
        const feeds = objective === 'dpo' ? dpoFeeds(m, pairs, refCache, chunks[0]!, beta, k.maxLength, pad)
          : await ktoFeeds(m, kto, refCache, chunks[0]!, beta, k.maxLength, pad, deployed);
        if (apply === null) res = await trainStep(prog.session, prog.info, state, feeds, lr);
        else {
          const acc = initAccumulator(state);
          const r1 = await accumulate(prog.session, prog.info, state, acc, feeds);
          res = { ...(await applyAccumulated(apply.session, apply.info, state, acc, lr)), metrics: r1.metrics };
        }
      } else {
        const acc = initAccumulator(state);
        const sums: Record<string, number> = {};
        for (const c of chunks) {
          const feeds = objective === 'dpo' ? dpoFeeds(m, pairs, refCache, c, beta, k.maxLength, pad)
            : await ktoFeeds(m, kto, refCache, c, beta, k.maxLength, pad, deployed);
          const r1 = await accumulate(prog.session, prog.info, state, acc, feeds);
          for (const [key, v] of Object.entries(r1.metrics)) sums[key] = (sums[key] ?? 0) + v / chunks.length;
        }
        res = { ...(await applyAccumulated(apply!.session, apply!.info, state, acc, lr)), metrics: sums };
      }
      result.stepsTaken = step + 1;
      result.steps.push({ step: step + 1, lr, beta, loss: res.loss, gradNorm: res.gradNorm, metrics: res.metrics });
      log.debug('align step', { step: step + 1, loss: res.loss, grad_norm: res.gradNorm, lr, ...res.metrics });

      const last = step + 1 === total;
      if ((step + 1) % k.klEveryNSteps === 0 || last) {
        const cur = stateToAdapter(state, start);
        if (!finiteAdapter(cur)) throw diverged(`adapter values are not finite after step ${step + 1}`);
        const klR = await heldoutKl(m, cur, deployed, contexts, 2 * k.microBatchSize, k.maxLength);
        const klC = await heldoutKl(m, cur, anchor, contexts, 2 * k.microBatchSize, k.maxLength);
        if (!Number.isFinite(klR) || !Number.isFinite(klC)) throw diverged(`KL is not finite after step ${step + 1}`);
        result.klChecks.push({ step: step + 1, perRound: klR, cumulative: klC, beta });
        // TRL-style `kl` on the step it was measured at (exact, nats/token, vs the deployed version).
        result.steps[result.steps.length - 1]!.metrics['kl'] = klR;
        if (klR > k.klBudget.perRound || klC > k.klBudget.cumulative) {
          // Over budget: roll back to the last in-budget state and stop.
          restoreParams(state, snapshot.params);
          result.stopReason = 'kl_budget';
          result.reason = `KL ${klR.toFixed(4)} (round) / ${klC.toFixed(4)} (cumulative) nats/token after step ${step + 1} exceeds the budget `
            + `${k.klBudget.perRound} / ${k.klBudget.cumulative}; kept step ${snapshot.step}`;
          result.keptStep = snapshot.step;
          result.kl.perRound = snapshot.perRound;
          result.kl.cumulative = snapshot.cumulative;
          break;
        }
        snapshot = { params: copyParams(state), step: step + 1, perRound: klR, cumulative: klC };
        result.keptStep = step + 1;
        result.kl.perRound = klR;
        result.kl.cumulative = klC;
        // The next check would cross a budget if the drift keeps its last pace: stop here, in budget.
        if (!last && (2 * klR - lastR > k.klBudget.perRound || 2 * klC - lastC > k.klBudget.cumulative)) {
          result.stopReason = 'kl_budget';
          result.reason = `KL ${klR.toFixed(4)} / ${klC.toFixed(4)} nats/token after step ${step + 1}; at this pace the next ${k.klEveryNSteps} step(s) would exceed the budget`;
          break;
        }
        lastR = klR;
        lastC = klC;
        if (k.adaptiveBeta !== null) {
          const ab = k.adaptiveBeta;
          beta = Math.min(ab.maxBeta, Math.max(ab.minBeta, adaptBeta(beta, klR, ab.target, ab.kBeta)));
        }
      }
    }
    result.beta = beta;
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
      const seqs = heldPairs.flatMap((p) => [p.chosen, p.rejected]);
      const pol = await sequenceLogps(m, candidate, seqs, 2 * k.microBatchSize, k.maxLength);
      const ref = await sequenceLogps(m, deployed, seqs, 2 * k.microBatchSize, k.maxLength);
      let acc = 0, margin = 0;
      for (let i = 0; i < heldPairs.length; i++) {
        const d = (pol[2 * i]! - ref[2 * i]!) - (pol[2 * i + 1]! - ref[2 * i + 1]!);
        if (d > 0) acc++;
        margin += k.beta * d;
      }
      result.heldout = { pairs: heldPairs.length, 'rewards/accuracies': acc / heldPairs.length, 'rewards/margins': margin / heldPairs.length };
    }
    // Sampled sequence-level KL on generations from the candidate.
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

function copyParams(state: TrainState): Record<string, Float32Array> {
  return Object.fromEntries(Object.entries(state.params).map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));
}

function restoreParams(state: TrainState, p: Record<string, Float32Array>): void {
  for (const [k, v] of Object.entries(p)) state.params[k] = new ort.Tensor('float32', v.slice(), state.params[k]!.dims);
}

function dpoFeeds(m: AlignModel, pairs: PairRow[], ref: Map<number, number[]>, idx: number[], beta: number, maxLength: number, pad: number): Record<string, OrtTensor> {
  const rows = idx.map((i) => pairs[i]!);
  const b = packLogProbBatch([...rows.map((r) => r.chosen), ...rows.map((r) => r.rejected)], pad, Math.min(maxLength, m.model.spec.maxPositions));
  const P = rows.length;
  return {
    ...batchFeeds(b),
    chosen_index: i64([P], rows.map((_, i) => i)), rejected_index: i64([P], rows.map((_, i) => P + i)),
    ref_chosen: f32([P], rows.map((r) => ref.get(r.id)![0]!)), ref_rejected: f32([P], rows.map((r) => ref.get(r.id)![1]!)),
    beta: f32([], [beta]),
  };
}

async function ktoFeeds(m: AlignModel, rows0: KtoRow[], ref: Map<number, number[]>, idx: number[], beta: number, maxLength: number, pad: number,
  deployed: LoraAdapter | null): Promise<Record<string, OrtTensor>> {
  const rows = idx.map((i) => rows0[i]!);
  const N = rows.length;
  // Mismatched pairs (x_i, y_{i+1}) for z₀, as TRL's KTOTrainer rotates completions in the batch.
  const mismatched = rows.map((r, i) => {
    const other = rows[(i + 1) % N]!;
    return { ids: [...r.prompt, ...other.own.ids.slice(other.own.promptLength)], promptLength: r.prompt.length };
  });
  const refKl = await sequenceLogps(m, deployed, mismatched, 2 * N, maxLength);
  const b = packLogProbBatch([...rows.map((r) => r.own), ...mismatched], pad, Math.min(maxLength, m.model.spec.maxPositions));
  return {
    ...batchFeeds(b),
    own_index: i64([N], rows.map((_, i) => i)), kl_index: i64([N], rows.map((_, i) => N + i)),
    ref_logps: f32([N], rows.map((r) => ref.get(r.id)![0]!)), ref_kl_logps: f32([N], Array.from(refKl)),
    desirable: f32([N], rows.map((r) => (r.desirable ? 1 : 0))), beta: f32([], [beta]),
  };
}
