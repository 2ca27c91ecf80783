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
import { trainSafetyJudge, safetyRows, type LabelledResponse } from '../align/safety.js';
import { runGate } from '../release/run-gate.js';
import type { CheckResult, NamedJudge } from '../gate/evidence.js';
import { effectiveMaxNewTokens, heldoutAgreement, heldoutPrompts, policyJudges, productionLabelled, responder, RESPOND, type ExternalJudgeConfig } from './gate-inputs.js';
import type { Policy, TrainerConfig } from '../policy/schema.js';
import type { ModelRuntime } from './model-runtime.js';
import { trainRewardSignals } from './reward-signal.js';
import type { RemoteTrainer } from '../remote/remote-trainer.js';
import { trainRemote, type RemoteTrainingResult } from './remote-round.js';
import { servingEvaluation } from './served-evidence.js';
import type { ServingEngine } from '../registry/serving-engine.js';

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
  /**
   * The lease's fence (several replicas): a round's commit points run inside it and throw
   * LEASE_LOST when another replica took the model over meanwhile. Absent: a single replica.
   */
  fence?: <T>(what: string, fn: () => T) => T;
  /** The serving engine that evaluates candidates when the policy's evaluation.engine is serving (adapters/servers/vllm-eval). */
  servingEngine?: (policy: Policy) => ServingEngine;
  /** The remote training engine for a policy whose trainer is not `local` (the composition root wires adapters/trainers). */
  remoteTrainer?: (trainer: Exclude<TrainerConfig, { kind: 'local' }>) => RemoteTrainer;
}

function servingEngine(deps: RoundDeps, policy: Policy): ServingEngine {
  if (deps.servingEngine === undefined) {
    throw new AligndError('CONFIG_INVALID', 'evaluation.engine serving has no engine wired in this process', { action: 'use evaluation.engine: local, or start alignd through its CLI (which wires vLLM)' });
  }
  return deps.servingEngine(policy);
}

const fenced = <T>(deps: RoundDeps, what: string, fn: () => T): T => (deps.fence === undefined ? fn() : deps.fence(what, fn));

function remoteTrainer(deps: RoundDeps, policy: Policy): RemoteTrainer {
  const cfg = policy.trainer;
  if (cfg.kind === 'local' || deps.remoteTrainer === undefined) {
    throw new AligndError('CONFIG_INVALID', `trainer.kind ${cfg.kind} has no engine wired in this process`, { action: 'use trainer.kind: local, or start alignd through its CLI (which wires the ray trainer)' });
  }
  return deps.remoteTrainer(cfg);
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
    // Shutdown: no outcome recorded, the round is redone after restart; except a remote job
    // cancelled by it, which is a discarded round with the job's log tail (the cluster's work is gone).
    if (deps.signal?.aborted === true && !(err instanceof AligndError && err.code === 'TRAINER_FAILED')) throw err;
    if (err instanceof AligndError && err.code === 'LEASE_LOST') {
      // Another replica holds the model now: it redoes this window; nothing of this round is written.
      log.warn('round abandoned: the lease moved to another replica', { round: mark.round, err: errorMessage(err) });
      return { model, round: mark.round, outcome: { decision: 'discarded', reasons: [errorMessage(err)] }, skipped: 'lease lost' };
    }
    const outcome: RoundOutcome = { decision: 'discarded', reasons: [`round failed: ${errorMessage(err)}`] };
    fenced(deps, 'recording the failed round', () => buffer.recordRoundResult(model, mark.round, outcome));
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

  // Reward signals (the linear heads and the BT reward model) and the safety judge, warm-started
  // from the last round's, trained on the training split only: every preference of the window
  // (whatever the round's loss) and, in KTO rounds, its up/down votes (asPairs pairs them
  // up-over-down); measured on the held-out split's preferences.
  const pairsWindow = types.includes('pair') ? window.examples
    : buffer.window({ model, types: ['pair'], sinceRound: previousMark, replayFraction: policy.objective.replay_fraction, ...caps, seed: round }).examples;
  const rewardWindow = types.includes('pair') ? pairsWindow : [...pairsWindow, ...window.examples];
  const rewardHeldout = buffer.heldout(model, ['pair', 'kto'], 500);
  const reward = await trainRewardSignals(rt, { m, buffer, caps, round, previousMark, types, window: rewardWindow, heldout: rewardHeldout, log,
    ...(deps.onProgress === undefined ? {} : { onProgress: deps.onProgress }), ...(deps.signal === undefined ? {} : { signal: deps.signal }) });
  const rewardSignal = reward.signal;
  const rewardMetrics = { heads: reward.heads, model: reward.model };
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
  const result: TrainingResult = policy.trainer.kind === 'local'
    ? await runRound({ model: m, deployedAdapter, anchorAdapter, window: window.examples, heldout, knobs: trainingKnobs(policy), seed: round,
      outDir, meta: { model, round, trigger, window: { ...span, maxExampleId: mark.maxExampleId, maxEventSeq: mark.maxEventSeq } }, log,
      ...(deps.signal === undefined ? {} : { signal: deps.signal }) })
    : await trainRemote({ trainer: remoteTrainer(deps, policy), policy, m, model, round, window: window.examples, heldout, baseDir: rt.baseDir(),
      deployedAdapterDir: deployedVersion === null ? null : rt.registry.get(deployedVersion)!.adapterDir, anchorAdapterDir: anchor === null ? null : rt.registry.get(anchor)!.adapterDir,
      outDir, log, ...(deps.signal === undefined ? {} : { signal: deps.signal }) });
  const remote = 'remote' in result ? (result as RemoteTrainingResult) : null;
  const last = result.steps.at(-1);
  const base: RoundOutcome = {
    decision: 'discarded', loss: last?.loss, klRound: result.kl.perRound, klCumulative: result.kl.cumulative,
    klBudgetRound: policy.kl.per_round, klBudgetCumulative: policy.kl.cumulative, steps: result.stepsTaken, stopReason: result.stopReason,
    examples: window.examples.length, newExamples: window.newCount, cappedOut: window.cappedOut, cappedBy: window.cappedBy, reward: rewardMetrics,
    rewardSignal, rewardSignalAccuracy: rewardSignal.heldoutPairs === 0 ? null : rewardSignal.heldoutCorrect / rewardSignal.heldoutPairs,
  };
  if (result.candidate === null || result.candidateDir === null || result.keptStep === 0) {
    const capped = window.examples.length === 0 && window.cappedOut > 0
      ? [`the data caps dropped all ${window.cappedOut} examples of the window (per user ${window.cappedBy.user}, per tenant ${window.cappedBy.tenant}, new users ${window.cappedBy.newUsers}): see data.* in the policy`]
      : [];
    const outcome = { ...base, reasons: [...capped, result.reason ?? `no candidate (${result.stopReason})`] };
    fenced(deps, 'recording the round', () => buffer.recordRoundResult(model, round, outcome));
    log.warn('round produced no candidate', { round, stopReason: result.stopReason, reason: result.reason });
    return { model, round, outcome };
  }
  checkAbort();

  const source = remote?.stage != null ? { write: remote.stage } : { adapterDir: result.candidateDir };
  const v = await fenced(deps, 'registering the candidate', () => rt.registry.addVersion(source, {
    parent: deployedVersion, base_model: { path: policy.base_model.path, sha256: policy.base_model.sha256 ?? null },
    data_window: { from: span.from, to: span.to, events: span.events, kafka_offsets: span.kafka_offsets, round, since_round: previousMark ?? null },
    round_metrics: { loss: last?.loss ?? null, steps: result.stepsTaken, kept_step: result.keptStep, stop_reason: result.stopReason,
      kl: result.kl, beta: result.beta, heldout: result.heldout, reward_signal: rewardSignal, reward_heads: reward.heads, reward_model: reward.model, examples: window.examples.length,
      ...(remote === null ? {} : { trainer: remote.remote }) },
  }));
  log.info('candidate registered', { round, version: v.version });
  deps.onProgress?.('gate.evaluate', { model, round, version: v.version });

  const scorer = reward.scorer;
  const judges = policyJudges(policy, m, safetyHeads, deps.externalJudge);
  const reports = productionLabelled(buffer.heldout(model, ['safety'], policy.safety.production_labelled), policy);
  const production = heldoutPrompts(buffer.heldout(model, ['pair', 'kto', 'sft', 'safety'], 2000), policy.probes.production_sample);
  const probePrompts = [...policy.probes.benign.map((p) => p.prompt), ...production.prompts, ...policy.probes.red_team.map((p) => p.prompt)];
  const maxNewTokens = effectiveMaxNewTokens(m, probePrompts, policy.gate.max_new_tokens);
  // The anchor answers too when it is another version than the deployed one.
  const anchorDiffers = (anchor ?? null) !== deployedVersion;
  // The candidate's answers and held-out agreement: from the local engine, or from the serving
  // engine (policy evaluation.engine), which measures margins on held-out pairs only.
  const kind = policy.evaluation.engine === 'serving' || !types.includes('kto') ? 'pairs' : 'binary';
  const evaluation = policy.evaluation.engine === 'serving'
    ? await servingEvaluation(servingEngine(deps, policy), {
      model, candidate: { version: v.version, adapterDir: v.adapterDir },
      deployed: deployedVersion === null ? null : { version: deployedVersion, adapterDir: rt.registry.get(deployedVersion)!.adapterDir },
      ...(anchorDiffers ? { anchor: anchor === null ? null : { version: anchor, adapterDir: rt.registry.get(anchor)!.adapterDir } } : {}),
      baseServedName: policy.base_model.served_name ?? policy.base_model.path, tokenizer: m.ckpt.tokenizer!, heldout, beta: result.beta,
      topK: policy.evaluation.top_logprobs, klContexts: policy.evaluation.kl_contexts, log, ...(deps.signal === undefined ? {} : { signal: deps.signal }),
      sampling: { maxTokens: maxNewTokens, temperature: RESPOND.temperature, topP: RESPOND.topP, seed: RESPOND.seed },
    })
    : {
      candidate: responder(m, result.candidate, maxNewTokens), deployed: responder(m, deployedAdapter, maxNewTokens),
      ...(anchorDiffers ? { anchor: responder(m, anchorAdapter, maxNewTokens) } : {}),
      ...await heldoutAgreement(m, result.candidate, deployedAdapter, heldout, result.beta, kind), served: null, close: async () => {},
    };
  const used = [...evaluation.used, ...production.used, ...reward.used, ...reports.used];
  fenced(deps, 'gating the candidate', () => undefined); // the gate may promote: only while still the holder
  let gate: Awaited<ReturnType<typeof runGate>>;
  try {
    gate = await runGate(rt.registry, v.version, policy, {
      candidate: evaluation.candidate, deployed: evaluation.deployed, ...(evaluation.anchor === undefined ? {} : { anchor: evaluation.anchor }),
      scorer: scorer ?? { score: async (p) => p.map(() => ({ mean: 0, std: Infinity, members: [] })) },
      rewardSignal, judges, productionLabelled: reports.labelled, productionPrompts: production.prompts,
      heldout: { kind, margins: evaluation.margins }, kl: { perRound: result.kl.perRound, cumulative: result.kl.cumulative },
      sources: { heldoutEventIds: used.flatMap((e) => e.eventIds), deployed: deployedVersion, anchor: policy.kl.anchor, maxNewTokens },
    }, { ...rt.pushOptions(deps.signal), log }, round);
  } finally {
    await evaluation.close();
  }

  const checks = gate.decision.checks;
  const outcome: RoundOutcome = {
    ...base, decision: gate.decision.decision, version: v.version, reasons: gate.decision.reasons,
    rewardLcb: comparisonOf(checks, 'reward_gain', 'deployed')?.bound, rewardGain: comparisonOf(checks, 'reward_gain', 'deployed')?.estimate,
    unsafeUcb: comparisonOf(checks, 'unsafe_rate', 'absolute', 'upper')?.bound, unsafeLimit: comparisonOf(checks, 'unsafe_rate', 'absolute', 'upper')?.limit,
    unsafeRate: figure(checks, 'unsafe_rate', 'rate'), unsafeRateDeployed: figure(checks, 'unsafe_rate', 'deployed_rate'),
    judges: checks.find((c) => c.check === 'judge_reliability')?.reason,
    heldoutAccuracy: comparisonOf(checks, 'heldout_accuracy', 'absolute')?.estimate, promoted: gate.promotion?.complete ?? false,
    checks: checkSummaries(checks), ...(gate.decision.level === undefined ? {} : { level: gate.decision.level }),
    ...(evaluation.served === null ? {} : { served: { engine: policy.evaluation.url ?? 'vllm', klLowerBound: evaluation.served.klLowerBound, positions: evaluation.served.positions, topK: evaluation.served.topK } }),
  };
  fenced(deps, 'recording the round', () => buffer.recordRoundResult(model, round, outcome));
  const removed = await rt.collectGarbage();
  if (removed.length > 0) log.info('registry gc', { removed });
  log.info('round finished', { round, version: v.version, decision: gate.decision.decision, reasons: gate.decision.reasons });
  return { model, round, outcome, version: v.version };
}
