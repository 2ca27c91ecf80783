/**
 * One training round of one model, end to end: close the data window, train the reward and
 * safety heads (warm-started), run the incremental DPO/KTO round against the deployed version,
 * register the candidate, let the gate decide (and promote when the deployment mode allows),
 * record the outcome. A crash anywhere leaves no half-applied state: the registry writes are
 * atomic, and a round without a recorded outcome is redone — the next window starts after the
 * last round that finished (see `sinceRound`).
 */
import { join } from 'node:path';
import { rmSync } from 'node:fs';
import { AligndError, errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import type { Example, ReplayBuffer, RoundOutcome } from '../store/buffer.js';
import type { Prompt } from '../feedback/schema.js';
import { runRound, type TrainingResult } from '../align/train-round.js';
import { trainingKnobs } from '../align/knobs.js';
import { trainRewardEnsemble, rewardScorer } from '../align/reward.js';
import { trainSafetyJudge, safetyJudge, safetyRows, combineJudges, judgeResponses, type LabelledResponse } from '../align/safety.js';
import type { HeadEnsemble } from '../align/heads.js';
import { clopperPearson } from '../stats/binomial.js';
import { pairLogRatios } from '../align/policy-logps.js';
import type { AlignModel } from '../align/context.js';
import type { LoraAdapter } from '../model/lora.js';
import { runGate } from '../release/run-gate.js';
import type { JudgeCalibration, Responder, RewardSignal, SafetyJudge } from '../gate/evidence.js';
import type { ModelRuntime } from './model-runtime.js';

export interface RoundDeps {
  buffer: ReplayBuffer;
  dataDir: string;
  log: Logger;
  /** External judges (any SafetyJudge, e.g. a classifier behind an API) combined with the built-in one. */
  externalJudges?: SafetyJudge[];
  /** Progress for long work (steps, evaluation), for logs and the CLI. */
  onProgress?: (what: string, fields: Record<string, unknown>) => void;
  /** Shutdown: the round is abandoned between phases and at every optimizer step, and redone after a restart. */
  signal?: AbortSignal;
}

export interface RoundSummary {
  model: string;
  round: number;
  outcome: RoundOutcome;
  version?: string;
  skipped?: string;
}

/** Sampling for the gate's responders: the same for candidate and deployed. */
const RESPOND = { maxNewTokens: 48, temperature: 0.7, topP: 0.95, seed: 7 };

/** Gate prompts are strings; a chat prompt is represented by its last user message. */
export function promptText(p: Prompt): string {
  if (typeof p === 'string') return p;
  const users = p.filter((m) => m.role === 'user');
  return (users.at(-1) ?? p.at(-1))?.content ?? '';
}

function responder(m: AlignModel, adapter: LoraAdapter | null): Responder {
  return {
    async respond(prompts) {
      const out: string[] = [];
      for (let i = 0; i < prompts.length; i += 16) {
        const chunk = prompts.slice(i, i + 16);
        const r = await m.model.generateText(chunk, { maxNewTokens: RESPOND.maxNewTokens, sampling: { temperature: RESPOND.temperature, topP: RESPOND.topP }, seed: RESPOND.seed + i }, adapter);
        out.push(...r.map((x) => x.text));
      }
      return out;
    },
  };
}

/** β·[(log π(y⁺) − log π_ref(y⁺)) − (log π(y⁻) − log π_ref(y⁻))] per held-out pair (DPO's implicit reward margin). */
async function heldoutMargins(m: AlignModel, candidate: LoraAdapter, deployed: LoraAdapter | null, pairs: Example[], beta: number): Promise<number[]> {
  const tok = m.ckpt.tokenizer!;
  const rows = pairs.filter((e) => e.type === 'pair' && e.chosen !== null && e.rejected !== null).slice(0, 200);
  const tokens = rows.map((e) => ({ chosen: tok.promptResponse(e.prompt, e.chosen!), rejected: tok.promptResponse(e.prompt, e.rejected!) }));
  return (await pairLogRatios(m, candidate, deployed, tokens)).map((d) => beta * d);
}

/**
 * Until per-judge limits land with the judges (issue 16, `safety.max_judge_fnr`), the built-in
 * heads are relied on when their false-negative rate's 95% Clopper–Pearson upper bound on held-out
 * safety reports is at most this.
 */
const BUILTIN_MAX_FNR = 0.3;

/**
 * The built-in heads' calibration on the held-out split (never trained on): held-out safety
 * reports are the labelled-unsafe examples, held-out accepted responses (chosen, or binary up) the
 * labelled-safe ones. Uncertain verdicts count as unsafe, as everywhere in the gate.
 */
async function builtinJudgeCalibration(m: AlignModel, heads: HeadEnsemble, heldout: Example[], threshold: number): Promise<JudgeCalibration> {
  const unsafe = safetyRows(heldout.filter((e) => e.type === 'safety')).slice(0, 200);
  const safe = heldout.flatMap((e) => (e.type === 'pair' && e.chosen !== null ? [{ prompt: e.prompt, response: e.chosen }]
    : e.type === 'kto' && e.label === 'up' && e.response !== null ? [{ prompt: e.prompt, response: e.response }] : [])).slice(0, 200);
  const judged = await judgeResponses(m, heads, [...unsafe, ...safe].map((r) => r.prompt), [...unsafe, ...safe].map((r) => r.response));
  const flagged = judged.map((v) => v.uncertain || !(v.pUnsafe < threshold));
  const falseNegatives = flagged.slice(0, unsafe.length).filter((f) => !f).length;
  const falsePositives = flagged.slice(unsafe.length).filter((f) => f).length;
  const fnrUpper = clopperPearson(falseNegatives, unsafe.length, 0.95).upper;
  const relied = unsafe.length > 0 && fnrUpper <= BUILTIN_MAX_FNR;
  const reason = unsafe.length === 0 ? 'no held-out safety reports to measure its false-negative rate on'
    : `false-negative rate ${falseNegatives}/${unsafe.length}, 95% upper bound ${fnrUpper.toFixed(3)} ${relied ? '≤' : '>'} ${BUILTIN_MAX_FNR} (false positives ${falsePositives}/${safe.length})`;
  return { name: 'builtin-heads', labelledUnsafe: unsafe.length, falseNegatives, labelledSafe: safe.length, falsePositives, relied, reason };
}

const figure = (checks: Array<{ check: string; figures: Record<string, unknown> }>, check: string, key: string): number | undefined => {
  const v = checks.find((c) => c.check === check)?.figures[key];
  return typeof v === 'number' ? v : undefined;
};

export async function runTrainingRound(rt: ModelRuntime, deps: RoundDeps, trigger: string): Promise<RoundSummary> {
  const policy = rt.policy();
  const model = rt.model;
  const log = deps.log.child({ model });
  const { buffer } = deps;
  if (policy.deployment.mode === 'frozen') {
    return { model, round: buffer.lastRound(model)?.round ?? 0, outcome: { decision: 'discarded', reasons: ['deployment is frozen'] }, skipped: 'frozen' };
  }
  buffer.deriveAll();
  const types: Array<'pair' | 'kto'> = policy.objective.loss_type === 'kto' ? ['kto'] : ['pair'];
  // The window starts after the last round that FINISHED: an interrupted round's data is redone.
  const previousMark = buffer.roundResults(model).at(-1)?.round;
  const mark = buffer.markRound(model);
  try {
    return await trainAndGate(rt, deps, trigger, mark, previousMark, types);
  } catch (err) {
    if (deps.signal?.aborted === true) throw err; // shutdown: no outcome recorded, the round is redone after restart
    const outcome: RoundOutcome = { decision: 'discarded', reasons: [`round failed: ${errorMessage(err)}`] };
    buffer.recordRoundResult(model, mark.round, outcome);
    log.error('round failed; the deployed version is untouched', { round: mark.round, err: errorMessage(err) });
    return { model, round: mark.round, outcome };
  }
}

async function trainAndGate(rt: ModelRuntime, deps: RoundDeps, trigger: string, mark: { round: number; maxExampleId: number; maxEventSeq: number },
  previousMark: number | undefined, types: Array<'pair' | 'kto'>): Promise<RoundSummary> {
  const policy = rt.policy();
  const model = rt.model;
  const log = deps.log.child({ model });
  const { buffer } = deps;
  const checkAbort = (): void => {
    if (deps.signal?.aborted === true) throw new AligndError('ROUND_ABANDONED', 'round abandoned between phases: shutting down', { action: 'none: the round is redone after the restart' });
  };
  const round = mark.round;
  log.info('round started', { round, trigger, sinceRound: previousMark ?? null });
  deps.onProgress?.('round.start', { model, round, trigger });

  const caps = {
    maxUserShare: policy.data.max_user_share, maxTenantShare: policy.data.max_tenant_share,
    newUsers: { minEvents: policy.data.new_users.min_events, minAgeMs: policy.data.new_users.min_age_hours * 3_600_000, maxShare: policy.data.new_users.max_share },
  };
  const window = buffer.window({ model, types, sinceRound: previousMark, replayFraction: policy.objective.replay_fraction, ...caps, seed: round });
  const heldout = buffer.heldout(model, types, 500);
  const prevSeq = previousMark === undefined ? 0 : (buffer.db.prepare('SELECT max_event_seq AS s FROM rounds WHERE model = ? AND round = ?').get(model, previousMark) as { s: number } | undefined)?.s ?? 0;
  const span = buffer.windowSpan(model, prevSeq, mark.maxEventSeq);

  const m = await rt.align();
  checkAbort();
  const deployedVersion = rt.registry.deployment()?.last_complete ?? null;
  const deployedAdapter = await rt.adapterOf(deployedVersion);
  const anchor = policy.kl.anchor === 'base' ? null : policy.kl.anchor;
  const anchorAdapter = await rt.adapterOf(anchor);

  // Reward ensemble and safety judge, warm-started from the last round's heads.
  const pairsWindow = window.examples.filter((e) => e.type === 'pair');
  const pairsHeldout = heldout.filter((e) => e.type === 'pair');
  let rewardHeads = rt.heads('reward');
  const rewardMetrics: Record<string, unknown> = {};
  if (pairsWindow.length > 0) {
    deps.onProgress?.('reward.train', { model, round, pairs: pairsWindow.length });
    const r = await trainRewardEnsemble({ model: m, window: pairsWindow, heldout: pairsHeldout, previous: rewardHeads });
    rewardHeads = r.ensemble;
    rt.saveHeads('reward', rewardHeads);
    Object.assign(rewardMetrics, r.metrics);
  }
  checkAbort();
  // Safety reports are capped like training data: a flood of reports from one source must not teach the judge.
  const safetyExamples = buffer.window({ model, types: ['safety'], replayFraction: 0, ...caps, seed: round }).examples;
  // Safety reports give the unsafe side; accepted (chosen) responses of this window give the safe side.
  const safeRows: LabelledResponse[] = pairsWindow.slice(0, Math.max(20, safetyExamples.length * 2)).map((e) => ({ prompt: e.prompt, response: e.chosen!, unsafe: false }));
  let safetyHeads = rt.heads('safety');
  const unsafeRows = safetyRows(safetyExamples);
  if (unsafeRows.length > 0 && safeRows.length > 0) {
    deps.onProgress?.('safety.train', { model, round, unsafe: unsafeRows.length, safe: safeRows.length });
    safetyHeads = (await trainSafetyJudge({ model: m, rows: [...unsafeRows, ...safeRows], previous: safetyHeads })).ensemble;
    rt.saveHeads('safety', safetyHeads);
  }
  checkAbort();

  const outDir = join(deps.dataDir, 'rounds', model, String(round));
  rmSync(outDir, { recursive: true, force: true }); // a redone round starts clean
  deps.onProgress?.('policy.train', { model, round, examples: window.examples.length, newExamples: window.newCount, replay: window.replayCount });
  const result: TrainingResult = await runRound({ model: m, deployedAdapter, anchorAdapter, window: window.examples, heldout, knobs: trainingKnobs(policy), seed: round,
    outDir, meta: { model, round, trigger, window: { ...span, maxExampleId: mark.maxExampleId, maxEventSeq: mark.maxEventSeq } }, log,
    ...(deps.signal === undefined ? {} : { signal: deps.signal }) });
  const last = result.steps.at(-1);
  const base: RoundOutcome = {
    decision: 'discarded', loss: last?.loss, klRound: result.kl.perRound, klCumulative: result.kl.cumulative,
    klBudgetRound: policy.kl.per_round, klBudgetCumulative: policy.kl.cumulative, steps: result.stepsTaken, stopReason: result.stopReason,
    examples: window.examples.length, newExamples: window.newCount, cappedOut: window.cappedOut, cappedBy: window.cappedBy, reward: rewardMetrics,
  };
  if (result.candidate === null || result.candidateDir === null || result.keptStep === 0) {
    const capped = window.examples.length === 0 && window.cappedOut > 0
      ? [`the data caps dropped all ${window.cappedOut} examples of the window (per user ${window.cappedBy.user}, per tenant ${window.cappedBy.tenant}, new users ${window.cappedBy.newUsers}): see data.* in the policy`]
      : [];
    const outcome = { ...base, reasons: [...capped, result.reason ?? `no candidate (${result.stopReason})`] };
    buffer.recordRoundResult(model, round, outcome);
    log.warn('round produced no candidate', { round, stopReason: result.stopReason, reason: result.reason });
    return { model, round, outcome };
  }
  checkAbort();

  const v = await rt.registry.addVersion({ adapterDir: result.candidateDir }, {
    parent: deployedVersion, base_model: { path: policy.base_model.path, sha256: policy.base_model.sha256 ?? null },
    data_window: { from: span.from, to: span.to, events: span.events, kafka_offsets: span.kafka_offsets, round, since_round: previousMark ?? null },
    round_metrics: { loss: last?.loss ?? null, steps: result.stepsTaken, kept_step: result.keptStep, stop_reason: result.stopReason,
      kl: result.kl, beta: result.beta, heldout: result.heldout, reward_model: rewardMetrics, examples: window.examples.length },
  });
  log.info('candidate registered', { round, version: v.version });
  deps.onProgress?.('gate.evaluate', { model, round, version: v.version });

  const scorer = rewardHeads === null ? undefined : rewardScorer(m, rewardHeads);
  const judges: SafetyJudge[] = [...(safetyHeads === null ? [] : [safetyJudge(m, safetyHeads)]), ...(deps.externalJudges ?? [])];
  const judge: SafetyJudge = judges.length === 0
    ? { judge: async (p) => p.map(() => ({ pUnsafe: 0.5, uncertain: true })) } // no judge yet: every verdict uncertain, so unsafe
    : combineJudges(judges);
  const judgeCalibrations: JudgeCalibration[] = safetyHeads === null ? []
    : [await builtinJudgeCalibration(m, safetyHeads, [...heldout, ...buffer.heldout(model, ['safety'], 200)], policy.gate.unsafe_threshold)];
  const pairs = typeof rewardMetrics['heldoutPairs'] === 'number' ? rewardMetrics['heldoutPairs'] : 0;
  const acc = typeof rewardMetrics['heldoutAccuracy'] === 'number' ? rewardMetrics['heldoutAccuracy'] : 0;
  const rewardSignal: RewardSignal = { name: 'linear-heads', heldoutPairs: pairs, heldoutCorrect: Math.round(acc * pairs) };
  const margins = await heldoutMargins(m, result.candidate, deployedAdapter, heldout, result.beta);
  const production = buffer.recentPrompts(model, policy.probes.production_sample).map(promptText);
  const gate = await runGate(rt.registry, v.version, policy, {
    candidate: responder(m, result.candidate), deployed: responder(m, deployedAdapter),
    scorer: scorer ?? { score: async (p) => p.map(() => ({ mean: 0, std: Infinity, members: [] })) },
    rewardSignal, judge, judges: judgeCalibrations, productionPrompts: production, heldoutMargins: margins, kl: { perRound: result.kl.perRound, cumulative: result.kl.cumulative },
  }, { ...rt.pushOptions(deps.signal), log }, round);

  const checks = gate.decision.checks;
  const outcome: RoundOutcome = {
    ...base, decision: gate.decision.decision, version: v.version, reasons: gate.decision.reasons,
    rewardLcb: figure(checks, 'reward_gain', 'lower_bound'), rewardGain: figure(checks, 'reward_gain', 'mean_gain'),
    unsafeUcb: figure(checks, 'unsafe_rate', 'upper_bound'), unsafeLimit: figure(checks, 'unsafe_rate', 'limit'),
    heldoutAccuracy: figure(checks, 'heldout_accuracy', 'accuracy'), promoted: gate.promotion?.complete ?? false,
  };
  buffer.recordRoundResult(model, round, outcome);
  const removed = await rt.collectGarbage();
  if (removed.length > 0) log.info('registry gc', { removed });
  log.info('round finished', { round, version: v.version, decision: gate.decision.decision, reasons: gate.decision.reasons });
  return { model, round, outcome, version: v.version };
}
