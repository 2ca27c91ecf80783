/**
 * The training loop of every served model: one runtime per policy file, the scheduler that
 * starts rounds, a reconcile timer (retries lagging server targets, pushes approvals given
 * through the CLI and candidates that waited for a probation), the probation monitor (watches a
 * promoted version on live feedback, rolls back by a policy pin), and the admin routes that act
 * on models (trigger, rollback). Adapters come in as factories from the composition root.
 */
import { join } from 'node:path';
import { AligndError, errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import type { ReplayBuffer } from '../store/buffer.js';
import type { Telemetry } from '../telemetry/telemetry.js';
import type { Policy } from '../policy/schema.js';
import { editDeployment } from '../policy/edit.js';
import { openRegistry } from '../registry/registry.js';
import { servedName, VERSION_RE } from '../base/names.js';
import type { PromotionPublisher, ServerTarget } from '../registry/targets.js';
import { convergeDeployment, nextToPromote, promoteIfAllowed } from '../release/deploy.js';
import { gateRoutes } from '../release/admin-routes.js';
import { effectiveDecision } from '../release/decisions.js';
import type { NamedJudge } from '../gate/evidence.js';
import { isBodyTooLarge, readJsonObject, sendJson, type Route } from '../http/route.js';
import { openModelRuntime, type ModelRuntime } from './model-runtime.js';
import { runTrainingRound, type ExternalJudgeConfig, type RoundDeps, type RoundSummary } from './training-round.js';
import { createScheduler, type Scheduler } from './scheduler.js';
import { createCanaryMonitor, type CanaryMonitor, type ProbationView } from '../canary/monitor.js';
import { probationRoutes } from '../canary/routes.js';
import { openLease, type Lease } from './lease.js';
import type { RuntimeOptions } from '../engine/sessions.js';

/** Largest rollback body ({"version": "vN"}): a few bytes; anything near this is not a rollback. */
const MAX_ROLLBACK_BYTES = 4096;

export interface LoopOptions {
  policyFiles: string[];
  dataDir: string;
  buffer: ReplayBuffer;
  log: Logger;
  telemetry: Telemetry;
  makeTargets: (policy: Policy) => ServerTarget[];
  publisher: PromotionPublisher;
  /** Makes a policy's external judge (the composition root wires adapters/judges). One per distinct config, kept across rounds (its cache too). */
  externalJudge?: (config: ExternalJudgeConfig) => NamedJudge;
  /** The remote training engine of a policy whose trainer is not local (adapters/trainers). */
  remoteTrainer?: RoundDeps['remoteTrainer'];
  /** The serving engine of a policy that evaluates there (adapters/servers/vllm-eval). */
  servingEngine?: RoundDeps['servingEngine'];
  /** Execution provider and threads for the models' sessions. */
  runtime?: Partial<RuntimeOptions>;
  /** min-new-examples check, reconcile and probation intervals. */
  pollMs?: number;
  reconcileMs?: number;
  /** Called after every round (the demo and tests watch rounds through it). */
  onRound?: (summary: RoundSummary) => void;
  /** false: no cron or min-new-examples triggers, only manual ones (the demo). */
  autoTriggers?: boolean;
  /** The rounds lease among replicas sharing dataDir (lease.ts): its ttl; renewed every ttl/3. Default 30 s. */
  leaseTtlMs?: number;
}

export interface ModelStatus {
  model: string;
  policyFile: string;
  mode: Policy['deployment']['mode'];
  deployed: string | null;
  serverName: string | null;
  complete: boolean | null;
  candidate: string | null;
  lastDecision: string | null;
  lastRound: number | null;
  lastRoundFigures: Record<string, unknown> | null;
  roundRunning: boolean;
  /** This replica holds the model's lease (runs its rounds, reconcile passes and probation). */
  leaseHeld: boolean;
  /** A reconcile pass is in hand; ticks meanwhile are skipped (counted), never queued. */
  reconcileRunning: boolean;
  reconcileSkippedTicks: number;
  policyRefusal: unknown;
  /** The open (or last) probation: versions, status, canary weight, the decision's outcome and reason. */
  probation: { version: string; previous: string; status: string; canaryWeight: number | null; outcome: string | null; reason: string | null } | null;
  /**
   * The audit chain's head (keep it: a later `alignd registry verify MODEL --head SEQ:HEAD`
   * detects truncation) and whether it is keyed; `note` says what an unkeyed chain cannot show.
   */
  audit: { seq: number; head: string; keyed: boolean; note?: string };
}

export interface Loop {
  runtimes: ModelRuntime[];
  scheduler: Scheduler;
  canary: CanaryMonitor;
  status(): ModelStatus[];
  routes(): Route[];
  runtime(model: string): ModelRuntime;
  stop(): Promise<void>;
}

export async function startLoop(opts: LoopOptions): Promise<Loop> {
  const log = opts.log.child({ stage: 'loop' });
  const registryRoot = join(opts.dataDir, 'registry');
  const controller = new AbortController();
  const runtimes = opts.policyFiles.map((file) => openModelRuntime({
    policyFile: file, dataDir: opts.dataDir, log: log.child({ policy: file }), makeTargets: opts.makeTargets, publisher: opts.publisher,
    onPolicyApplied: () => scheduler.reschedule(),
    ...(opts.runtime === undefined ? {} : { runtime: opts.runtime }),
  }));
  const seen = new Set<string>();
  for (const rt of runtimes) {
    if (seen.has(rt.model)) throw new AligndError('CONFIG_INVALID', `two policy files name the model ${rt.model}`, { action: 'one policy file per served model' });
    seen.add(rt.model);
  }
  const byModel = (model: string): ModelRuntime => {
    const rt = runtimes.find((r) => r.model === model);
    if (rt === undefined) throw new AligndError('CONFIG_INVALID', `no policy for model ${model}`, { action: `start alignd with --policy for ${model}` });
    return rt;
  };
  for (const rt of runtimes) {
    await rt.recover();
    await rt.enforce(); // a pinned version is served from the start
  }

  // One replica runs each model's rounds, reconcile passes and probation: the holder of its lease.
  const leaseTtlMs = opts.leaseTtlMs ?? 30_000;
  const leases = new Map(runtimes.map((rt) => [rt.model, openLease({ dir: join(opts.dataDir, 'leases'), model: rt.model, ttlMs: leaseTtlMs })]));
  const leaseOf = (model: string): Lease => leases.get(model)!;
  const renewLeases = (): void => {
    for (const [model, lease] of leases) {
      const before = lease.held();
      let now = false;
      try {
        now = lease.tryAcquire();
      } catch (err) {
        log.error('lease renewal failed', { model, err: errorMessage(err) });
      }
      if (now !== before) log.info(now ? 'lease taken: this replica runs the model\'s rounds' : 'lease lost: another replica runs the model\'s rounds', { model, owner: lease.owner, token: lease.token() });
    }
  };
  renewLeases();
  const leaseTimer = setInterval(renewLeases, Math.max(50, Math.floor(leaseTtlMs / 3)));
  leaseTimer.unref();

  const lastFinished = (model: string): number | undefined => opts.buffer.roundResults(model, 1).at(-1)?.round;
  const typesOf = (rt: ModelRuntime): Array<'pair' | 'kto'> => (rt.policy().objective.loss_type === 'kto' ? ['kto'] : ['pair']);
  const judgesByConfig = new Map<string, NamedJudge>();
  const make = opts.externalJudge;
  const externalJudge = make === undefined ? undefined : (c: ExternalJudgeConfig): NamedJudge => {
    const key = JSON.stringify(c);
    let j = judgesByConfig.get(key);
    if (j === undefined) judgesByConfig.set(key, j = make(c));
    return j;
  };
  const scheduler: Scheduler = createScheduler({
    log,
    ...(opts.autoTriggers === undefined ? {} : { autoTriggers: opts.autoTriggers }),
    ...(opts.pollMs === undefined ? {} : { pollMs: opts.pollMs }),
    models: runtimes.map((rt) => ({
      model: rt.model,
      cron: () => rt.policy().schedule.cron,
      minNewExamples: () => rt.policy().schedule.min_new_examples,
      newExamples: () => opts.buffer.newSinceCount(rt.model, typesOf(rt), lastFinished(rt.model)),
      frozen: () => rt.policy().deployment.mode === 'frozen',
    })),
    runRound: async (model, trigger) => {
      const rt = byModel(model);
      const lease = leaseOf(model);
      const token = lease.token();
      if (token === null) {
        log.info('round not started: another replica holds the lease', { model, trigger });
        return;
      }
      const t0 = Date.now();
      const summary = await opts.telemetry.span('alignd.round', { model, trigger }, () => runTrainingRound(rt, {
        buffer: opts.buffer, dataDir: opts.dataDir, log, signal: controller.signal,
        ...(externalJudge === undefined ? {} : { externalJudge }),
        ...(opts.remoteTrainer === undefined ? {} : { remoteTrainer: opts.remoteTrainer }),
        ...(opts.servingEngine === undefined ? {} : { servingEngine: opts.servingEngine }),
        fence: (what, fn) => lease.fenced(token, what, fn),
        onProgress: (what, fields) => log.info(`progress: ${what}`, fields),
      }, trigger));
      const o = summary.outcome;
      const i = opts.telemetry.instruments;
      i.rounds.add(1, { model, outcome: o.decision });
      if (o.decision !== 'discarded') i.decisions.add(1, { model, decision: o.decision });
      if (typeof o.loss === 'number') i.roundLoss.record(o.loss, { model });
      if (typeof o.klRound === 'number') i.roundKl.record(o.klRound, { model });
      if (typeof o.rewardLcb === 'number') i.rewardLcb.record(o.rewardLcb, { model });
      if (typeof o.unsafeUcb === 'number') i.unsafeUcb.record(o.unsafeUcb, { model });
      if (typeof o['rewardSignalAccuracy'] === 'number') i.rewardSignalAccuracy.record(o['rewardSignalAccuracy'], { model, signal: (o['rewardSignal'] as { name?: string } | undefined)?.name ?? 'unknown' });
      if (o['promoted'] === true) i.promotionLatency.record((Date.now() - t0) / 1000, { model });
      opts.onRound?.(summary);
    },
  });

  const canary = createCanaryMonitor({ db: opts.buffer.db, log, models: runtimes.map((rt) => ({
    model: rt.model, registry: rt.registry, policyFile: rt.policyFile, policy: () => rt.policy(), reload: () => rt.watcher.check(),
    push: () => rt.pushOptions(controller.signal), active: () => leaseOf(rt.model).held(),
  })) });
  const canaryTimer = setInterval(() => {
    canary.tick().catch((err: unknown) => {
      opts.telemetry.instruments.errors.add(1, { component: 'canary' });
      log.error('probation check failed; retried on the next tick', { err: errorMessage(err) });
    });
  }, opts.pollMs ?? 5000);
  canaryTimer.unref();

  // The deployment controller: each tick compares what every server lists with what should be
  // served (the pin, else the registry's desired version) and pushes the difference; in auto mode
  // it also pushes versions approved elsewhere (CLI). At most one pass per model at a time: a
  // tick that finds one running is skipped, so a hung server cannot pile passes up.
  const reconciling = new Map<string, Promise<void>>();
  const skippedTicks = new Map<string, number>();
  const reconcileTimer = setInterval(() => {
    for (const rt of runtimes) {
      if (!leaseOf(rt.model).held()) continue; // the holder reconciles
      if (reconciling.has(rt.model)) {
        skippedTicks.set(rt.model, (skippedTicks.get(rt.model) ?? 0) + 1);
        log.debug('reconcile still running; tick skipped', { model: rt.model });
        continue;
      }
      const p = rt.policy();
      const pass = (async () => {
        await convergeDeployment(rt.registry, p.deployment, rt.pushOptions(controller.signal));
        const next = p.deployment.mode === 'auto' ? nextToPromote(rt.registry) : undefined;
        if (next !== undefined) await promoteIfAllowed(rt.registry, next, p.deployment, { ...rt.pushOptions(controller.signal), rollout: p.rollout });
      })().catch((err: unknown) => {
        opts.telemetry.instruments.errors.add(1, { component: 'reconcile' });
        log.error('reconcile failed; retried on the next tick', { model: rt.model, err: errorMessage(err) });
      }).finally(() => reconciling.delete(rt.model));
      reconciling.set(rt.model, pass);
    }
  }, opts.reconcileMs ?? 30_000);
  reconcileTimer.unref();

  function auditStatus(rt: ModelRuntime): ModelStatus['audit'] {
    const h = rt.registry.auditHead();
    return h.keyed ? h : { ...h, note: 'ALIGND_AUDIT_KEY is not set: a plain sha256 chain, which whoever can write the file can rewrite and rehash' };
  }

  function status(): ModelStatus[] {
    return runtimes.map((rt) => {
      const d = rt.registry.deployment();
      const latest = rt.registry.latest();
      const last = opts.buffer.roundResults(rt.model, 1).at(-1);
      const p = rt.policy();
      return {
        model: rt.model, policyFile: rt.policyFile, mode: p.deployment.mode,
        deployed: d?.desired ?? null, serverName: d === undefined ? null : servedName(rt.model, d.desired), complete: d?.complete ?? null,
        candidate: latest !== undefined && latest.version !== d?.desired ? `${latest.version} (${effectiveDecision(latest)})` : null,
        lastDecision: last?.result.decision ?? null, lastRound: last?.round ?? null, lastRoundFigures: last?.result ?? null,
        roundRunning: scheduler.running(rt.model), leaseHeld: leaseOf(rt.model).held(), policyRefusal: rt.watcher.lastRefusal() ?? null,
        reconcileRunning: reconciling.has(rt.model), reconcileSkippedTicks: skippedTicks.get(rt.model) ?? 0,
        probation: probationSummary(canary.view(rt.model)),
        audit: auditStatus(rt),
      };
    });
  }

  function routes(): Route[] {
    return [
      ...gateRoutes({ registryRoot, onApproved: async (reg, v) => {
        const rt = byModel(reg.model);
        await promoteIfAllowed(reg, v, rt.policy().deployment, { ...rt.pushOptions(controller.signal), rollout: rt.policy().rollout });
      } }),
      ...probationRoutes(canary, () => runtimes.map((rt) => rt.model)),
      { method: 'POST', path: '/v1/models/:model/trigger', admin: true, handler: (_q, res, p) => {
        const rt = runtimes.find((r) => r.model === p['model']);
        if (rt === undefined) return sendJson(res, 404, { error: `no policy for model ${JSON.stringify(p['model'])}` });
        const running = scheduler.running(rt.model);
        void scheduler.trigger(rt.model, 'manual (admin API)');
        sendJson(res, 202, { model: rt.model, queued: running, started: !running });
      } },
      { method: 'POST', path: '/v1/models/:model/rollback', admin: true, handler: async (req, res, p) => {
        const rt = runtimes.find((r) => r.model === p['model']);
        if (rt === undefined) return sendJson(res, 404, { error: `no policy for model ${JSON.stringify(p['model'])}` });
        let body: Record<string, unknown>;
        try {
          body = await readJsonObject(req, MAX_ROLLBACK_BYTES);
        } catch (err) {
          if (isBodyTooLarge(err)) return sendJson(res, 413, { error: errorMessage(err) });
          return sendJson(res, 400, { error: `body must be JSON {"version": "vN"}: ${errorMessage(err)}` });
        }
        const version = body['version'];
        if (typeof version !== 'string' || !VERSION_RE.test(version)) return sendJson(res, 400, { error: 'body must be JSON {"version": "vN"}' });
        if (!openRegistry(registryRoot, rt.model).has(version)) return sendJson(res, 404, { error: `${rt.model} has no ${version}` });
        // The policy file stays the source of truth: the rollback is an edit of it, which the watcher applies.
        try {
          editDeployment(rt.policyFile, { mode: 'pinned', version }, { versionExists: (m, v) => openRegistry(registryRoot, m).has(v) });
        } catch (err) {
          return sendJson(res, 409, { error: errorMessage(err) });
        }
        // Applying the edit waits for the push only up to the runtime's bound (a hung server must
        // not hold the answer); the push goes on and /v1/status shows when it completes.
        await rt.watcher.check();
        const d = rt.registry.deployment();
        sendJson(res, 200, { model: rt.model, deployment: rt.policy().deployment, push: { desired: d?.desired ?? null, complete: d?.complete ?? false } });
      } },
    ];
  }

  return {
    runtimes, scheduler, canary, status, routes, runtime: byModel,
    async stop() {
      controller.abort();
      clearInterval(reconcileTimer);
      clearInterval(canaryTimer);
      clearInterval(leaseTimer);
      await scheduler.stop();
      await Promise.all(runtimes.map((rt) => rt.stop()));
      await Promise.all([...reconciling.values()]);
      for (const lease of leases.values()) if (lease.held()) lease.release(); // the next replica need not wait the ttl
    },
  };
}

function probationSummary(v: ProbationView | null): ModelStatus['probation'] {
  if (v === null) return null;
  return { version: v.version, previous: v.previous, status: v.status, canaryWeight: v.canary_weight, outcome: v.decision?.outcome ?? null, reason: v.decision?.reason ?? null };
}
