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
import { runRound, type TrainingResult } from '../align/train-round.js';
import { trainingKnobs } from '../align/knobs.js';
import { trainRewardEnsemble, rewardScorer } from '../align/reward.js';
import { trainSafetyJudge, safetyRows, type LabelledResponse } from '../align/safety.js';
import { runGate } from '../release/run-gate.js';
import type { CheckResult, NamedJudge } from '../gate/evidence.js';
import { effectiveMaxNewTokens, heldoutAgreement, heldoutPrompts, measuredSignal, policyJudges, productionLabelled, responder, type ExternalJudgeConfig } from './gate-inputs.js';
import type { ModelRuntime } from './model-runtime.js';

export interface RoundDeps {
  buffer: ReplayBuffer;
  dataDir: string;
  log: Logger;
  /** The policy's external judges (safety.judges of kind openai_compatible), made by the composition root's adapters. */
  externalJudge?: (config: ExternalJudgeConfig) => NamedJudge;
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

export { promptText, policyJudges, productionLabelled, type ExternalJudgeConfig } from './gate-inputs.js';

const figure = (checks: CheckResult[], check: string, key: string): number | undefined => {
  const v = checks.find((c) => c.check === check)?.figures[key];
  return typeof v === 'number' ? v : undefined;
};

/** The figures the status page charts, from the decision's comparisons. */
function comparisonOf(checks: CheckResult[], check: string, against: string, side?: 'upper' | 'lower') {
  return checks.find((c) => c.check === check)?.comparisons.find((x) => x.against === against && (side === undefined || x.side === side));
}

/** Per check, what an operator reads: status, α, and each comparison's estimate, bound, limit and counts. */
export function checkSummaries(checks: CheckResult[]): Array<Pick<CheckResult, 'check' | 'status' | 'alpha' | 'comparisons' | 'reason'>> {
  return checks.map((c) => ({ check: c.check, status: c.status, alpha: c.alpha, comparisons: c.comparisons, reason: c.reason }));
}

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

  // Reward ensemble and safety judge, warm-started from the last round's heads, trained on the
  // training split only: every preference of the window (whatever the round's loss) and, in KTO
  // rounds, its up/down votes (asPairs pairs them up-over-down).
  const pairsWindow = types.includes('pair') ? window.examples
    : buffer.window({ model, types: ['pair'], sinceRound: previousMark, replayFraction: policy.objective.replay_fraction,
      maxUserShare: policy.data.max_user_share, maxTenantShare: policy.data.max_tenant_share, seed: round }).examples;
  const rewardWindow = types.includes('pair') ? pairsWindow : [...pairsWindow, ...window.examples];
  const rewardHeldout = buffer.heldout(model, ['pair', 'kto'], 500);
  let rewardHeads = rt.heads('reward');
  const rewardMetrics: Record<string, unknown> = {};
  if (rewardWindow.length > 0) {
    deps.onProgress?.('reward.train', { model, round, examples: rewardWindow.length });
    const r = await trainRewardEnsemble({ model: m, window: rewardWindow, heldout: rewardHeldout, previous: rewardHeads });
    rewardHeads = r.ensemble;
    rt.saveHeads('reward', rewardHeads);
    Object.assign(rewardMetrics, r.metrics);
  }
  checkAbort();
  // Safety reports are capped like training data: a flood of reports from one source must not teach the judge.
  const safetyExamples = buffer.window({ model, types: ['safety'], replayFraction: 0, ...caps, seed: round }).examples;
  // Safety reports give the unsafe side; accepted answers of the training window (chosen, or up-voted) the safe side.
  const accepted: LabelledResponse[] = rewardWindow.flatMap((e) => (e.type === 'pair' && e.chosen !== null ? [{ prompt: e.prompt, response: e.chosen, unsafe: false }]
    : e.type === 'kto' && e.label === 'up' && e.response !== null ? [{ prompt: e.prompt, response: e.response, unsafe: false }] : []));
  const safeRows = accepted.slice(0, Math.max(20, safetyExamples.length * 2));
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
  const judges = policyJudges(policy, m, safetyHeads, deps.externalJudge);
  const reports = productionLabelled(buffer.heldout(model, ['safety'], policy.safety.production_labelled), policy);
  const signal = await measuredSignal(m, rewardHeads, rewardHeldout);
  const kind = types.includes('kto') ? 'binary' : 'pairs';
  const agreement = await heldoutAgreement(m, result.candidate, deployedAdapter, heldout, result.beta, kind);
  const production = heldoutPrompts(buffer.heldout(model, ['pair', 'kto', 'sft', 'safety'], 2000), policy.probes.production_sample);
  const probePrompts = [...policy.probes.benign.map((p) => p.prompt), ...production.prompts, ...policy.probes.red_team.map((p) => p.prompt)];
  const maxNewTokens = effectiveMaxNewTokens(m, probePrompts, policy.gate.max_new_tokens);
  // The anchor answers too when it is another version than the deployed one.
  const anchorDiffers = (anchor ?? null) !== deployedVersion;
  const used = [...agreement.used, ...production.used, ...signal.used, ...reports.used];
  const gate = await runGate(rt.registry, v.version, policy, {
    candidate: responder(m, result.candidate, maxNewTokens), deployed: responder(m, deployedAdapter, maxNewTokens),
    ...(anchorDiffers ? { anchor: responder(m, anchorAdapter, maxNewTokens) } : {}),
    scorer: scorer ?? { score: async (p) => p.map(() => ({ mean: 0, std: Infinity, members: [] })) },
    rewardSignal: signal.signal, judges, productionLabelled: reports.labelled, productionPrompts: production.prompts,
    heldout: { kind, margins: agreement.margins }, kl: { perRound: result.kl.perRound, cumulative: result.kl.cumulative },
    sources: { heldoutEventIds: used.flatMap((e) => e.eventIds), deployed: deployedVersion, anchor: policy.kl.anchor, maxNewTokens },
  }, { ...rt.pushOptions(deps.signal), log }, round);

  const checks = gate.decision.checks;
  const outcome: RoundOutcome = {
    ...base, decision: gate.decision.decision, version: v.version, reasons: gate.decision.reasons,
    rewardLcb: comparisonOf(checks, 'reward_gain', 'deployed')?.bound, rewardGain: comparisonOf(checks, 'reward_gain', 'deployed')?.estimate,
    unsafeUcb: comparisonOf(checks, 'unsafe_rate', 'absolute', 'upper')?.bound, unsafeLimit: comparisonOf(checks, 'unsafe_rate', 'absolute', 'upper')?.limit,
    unsafeRate: figure(checks, 'unsafe_rate', 'rate'), unsafeRateDeployed: figure(checks, 'unsafe_rate', 'deployed_rate'),
    judges: checks.find((c) => c.check === 'judge_reliability')?.reason,
    heldoutAccuracy: comparisonOf(checks, 'heldout_accuracy', 'absolute')?.estimate, promoted: gate.promotion?.complete ?? false,
    checks: checkSummaries(checks), ...(gate.decision.level === undefined ? {} : { level: gate.decision.level }),
  };
  buffer.recordRoundResult(model, round, outcome);
  const removed = await rt.collectGarbage();
  if (removed.length > 0) log.info('registry gc', { removed });
  log.info('round finished', { round, version: v.version, decision: gate.decision.decision, reasons: gate.decision.reasons });
  return { model, round, outcome, version: v.version };
}
