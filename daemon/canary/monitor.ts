/**
 * The daemon side of probation: on every tick, for each model whose served version is on
 * probation, read the feedback stored since the last tick (both versions, in storage order), feed
 * it to the comparison (./probation.ts), and act on its decision:
 *
 * - rollback: write the decision and its figures to the registry and the audit log, then pin the
 *   previous version in the policy file with the operator's own edit (comments kept, a note saying
 *   why) and apply it at once through the policy watcher — the same hot reload a person's
 *   `alignd rollback` goes through, which closes the probation as rolled back and serves the pin.
 * - stable: recorded; a staged rollout's canary weight ends (announced again with all traffic), and
 *   candidates that waited are promoted by the loop's reconcile.
 * - hold: recorded with what a person can do (`alignd approve`, `alignd rollback`).
 *
 * Switching `rollout.enabled` off during a probation keeps the version (stable, by policy); a
 * `frozen` deployment pauses the watch. The comparison lives in memory and is rebuilt from the
 * stored events after a restart (the same events in the same order give the same figures), so
 * nothing but decisions needs persisting.
 */
import { errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { servedName } from '../base/names.js';
import type { Db } from '../store/db.js';
import { versionFeedbackSince, versionFeedbackWindow, versionsHaveTenants, type VersionFeedbackRow } from '../store/version-feedback.js';
import type { Policy } from '../policy/schema.js';
import { editDeployment } from '../policy/edit.js';
import type { Registry } from '../registry/registry.js';
import { promote, type PromoteOptions } from '../registry/promote.js';
import type { ProbationRecord } from '../registry/manifest.js';
import { markRollbackDecided, openProbation, recordProbationDecision } from '../release/probation.js';
import { startProbation, type Probation, type ProbationDecision, type ProbationFigures, type ProbationPoint } from './probation.js';
import type { ProbationEvent } from './signals.js';

/** What the monitor needs of one served model (the loop's runtime provides it). */
export interface CanaryModel {
  model: string;
  registry: Registry;
  policyFile: string;
  policy(): Policy;
  /** Check the policy file now and apply it (the watcher's own check): alignd's pin takes effect at once. */
  reload(): Promise<void>;
  /** What a push of this model needs (its current targets, publisher, retry, log, stop signal). */
  push(): Omit<PromoteOptions, 'reason'>;
  /**
   * Whether this process watches the model now: with several replicas on one data directory only
   * the holder of the model's lease (loop/lease.ts) decides, so a rollback is pinned once. Absent: always.
   */
  active?(): boolean;
}

/** What the status page and `GET /v1/models/:model/probation` show. */
export interface ProbationView {
  version: string;
  previous: string;
  status: ProbationRecord['status'];
  started_at: string;
  canary_weight: number | null;
  figures: ProbationFigures | null;
  timeline: ProbationPoint[];
  decision: ProbationRecord['decision'] | null;
}

export interface CanaryMonitor {
  /** One pass over every model; passes never overlap. */
  tick(now?: number): Promise<void>;
  /** The open probation of `model`, or its last decided one; null when it never had one. */
  view(model: string): ProbationView | null;
}

interface Watch { version: string; probation: Probation; cursor: number; names: Record<string, 'canary' | 'baseline'>; fromMs: number }

/** Rows read per query: a long backlog is read in pages within one tick. */
const PAGE = 5000;

function toEvent(row: VersionFeedbackRow, arm: 'canary' | 'baseline'): ProbationEvent {
  return { arm, at: row.ingested_at, kind: row.kind, tenant: row.tenant, label: row.label, score: row.score, changed: row.changed === null ? null : row.changed === 1, count: row.count };
}

export function createCanaryMonitor(opts: { db: Db; models: CanaryModel[]; log: Logger }): CanaryMonitor {
  const log = opts.log.child({ stage: 'canary' });
  const watches = new Map<string, Watch>();
  let running: Promise<void> | undefined;

  function begin(m: CanaryModel, version: string, rec: ProbationRecord): Watch {
    const r = m.policy().rollout;
    const names: Record<string, 'canary' | 'baseline'> = {};
    for (const n of [version, servedName(m.model, version)]) names[n] = 'canary';
    for (const n of [rec.previous, servedName(m.model, rec.previous)]) names[n] = 'baseline';
    const fromMs = Date.parse(rec.started_at);
    const previousNames = [rec.previous, servedName(m.model, rec.previous)];
    const probation = startProbation({
      rollout: r, versions: { canary: version, baseline: rec.previous }, startedAt: fromMs,
      tenants: versionsHaveTenants(opts.db, m.model, previousNames),
    });
    // Without a staged rollout the previous version serves nothing during probation: its last
    // window before the promotion is the baseline (late feedback on it still joins).
    if (rec.canary_weight === null) {
      for (const row of versionFeedbackWindow(opts.db, { model: m.model, versions: previousNames, beforeMs: fromMs, limit: r.baseline_events })) {
        probation.observe(toEvent(row, 'baseline'));
      }
    }
    log.info('probation watched', { model: m.model, version, previous: rec.previous, canary_weight: rec.canary_weight, started_at: rec.started_at });
    return { version, probation, cursor: 0, names, fromMs };
  }

  async function act(m: CanaryModel, w: Watch, d: ProbationDecision, previous: string): Promise<void> {
    const reg = m.registry;
    const decision = { reason: d.reason, by: 'alignd', trigger: d.trigger, ...(d.tenant === undefined ? {} : { tenant: d.tenant }),
      figures: w.probation.figures(), timeline: w.probation.timeline() };
    if (d.outcome !== 'rollback') {
      await recordProbationDecision(reg, w.version, { ...decision, outcome: d.outcome });
      if (d.outcome === 'stable') log.info('probation: stable', { model: m.model, version: w.version, reason: d.reason });
      else log.warn('probation: held for a person', { model: m.model, version: w.version, reason: d.reason });
      if (d.outcome === 'stable') await endStagedRollout(m);
      return;
    }
    await markRollbackDecided(reg, w.version, decision);
    log.warn('probation: rolling back', { model: m.model, version: w.version, to: previous, reason: d.reason });
    try {
      editDeployment(m.policyFile, { mode: 'pinned', version: previous }, { versionExists: (_m, v) => reg.has(v) },
        `rolled back ${w.version} to ${previous} at ${new Date(d.at).toISOString()}: ${d.trigger}${d.tenant === undefined ? '' : ` (tenant ${d.tenant})`} worse on probation`);
    } catch (err) {
      // The pin could not be written: a person must act, with everything alignd knows.
      const reason = `automatic rollback to ${previous} failed: ${errorMessage(err)}; the comparison found: ${d.reason}; pin it by hand: alignd rollback ${m.model} ${previous}`;
      await recordProbationDecision(reg, w.version, { ...decision, outcome: 'hold', reason });
      log.error('probation: the rollback pin could not be written', { model: m.model, version: w.version, err: errorMessage(err) });
      return;
    }
    await m.reload();
  }

  /** A staged rollout whose probation is closed: announce (and push) the version with all traffic. */
  async function endStagedRollout(m: CanaryModel): Promise<void> {
    const s = m.registry.deployment();
    if (s?.canary === null || s?.canary === undefined || !s.complete) return;
    const open = openProbation(m.registry);
    if (open?.version === s.desired) return;
    await promote(m.registry, s.desired, { ...m.push(), reason: `probation ended: ${s.desired} takes all traffic`, canary: null });
  }

  async function tickModel(m: CanaryModel, now: number): Promise<void> {
    if (m.active?.() === false) {
      watches.delete(m.model); // on taking the model over, the watch replays the stored events, as after a restart
      return;
    }
    await endStagedRollout(m);
    const open = openProbation(m.registry);
    const p = m.policy();
    if (open !== undefined && !p.rollout.enabled) {
      // A person switched probation off: the version stays, unwatched, and candidates may follow.
      await recordProbationDecision(m.registry, open.version, { outcome: 'stable', by: 'policy',
        reason: `rollout.enabled was set to false while ${open.version} was on probation: it is kept and no longer watched` });
      watches.delete(m.model);
      await endStagedRollout(m);
      return;
    }
    // A frozen deployment changes nothing, a rollback included: the watch resumes when it is unfrozen.
    if (p.deployment.mode === 'frozen') return;
    const rec = open?.manifest.probation;
    const s = m.registry.deployment();
    if (open === undefined || rec?.status !== 'watching' || s?.desired !== open.version || !s.complete) {
      watches.delete(m.model);
      return;
    }
    let w = watches.get(m.model);
    if (w?.version !== open.version) {
      w = begin(m, open.version, rec);
      watches.set(m.model, w);
    }
    let decision = w.probation.decision();
    for (let rows = PAGE; rows === PAGE && decision === undefined;) {
      const page = versionFeedbackSince(opts.db, { model: m.model, versions: Object.keys(w.names), afterSeq: w.cursor, fromMs: w.fromMs, limit: PAGE });
      rows = page.length;
      for (const row of page) {
        w.cursor = row.seq;
        decision = w.probation.observe(toEvent(row, w.names[row.model_version]!));
        if (decision !== undefined) break;
      }
      // A long backlog (a restart replays the whole watch) must not hold the event loop: yield between pages.
      if (rows === PAGE) await new Promise((r) => setImmediate(r));
    }
    decision ??= w.probation.expire(now);
    if (decision === undefined) return;
    watches.delete(m.model);
    await act(m, w, decision, rec.previous);
  }

  function view(model: string): ProbationView | null {
    const m = opts.models.find((x) => x.model === model);
    if (m === undefined) return null;
    const w = watches.get(model);
    const v = w !== undefined ? m.registry.get(w.version) : m.registry.list().reverse().find((x) => x.manifest.probation !== null);
    const rec = v?.manifest.probation;
    if (v === undefined || rec === null || rec === undefined) return null;
    const live = w !== undefined && w.version === v.version;
    const decided = rec.decision as (NonNullable<ProbationRecord['decision']> & { figures?: ProbationFigures; timeline?: ProbationPoint[] }) | undefined;
    return {
      version: v.version, previous: rec.previous, status: rec.status, started_at: rec.started_at, canary_weight: rec.canary_weight,
      figures: live ? w.probation.figures() : (decided?.figures ?? null),
      timeline: live ? w.probation.timeline() : (decided?.timeline ?? []),
      decision: rec.decision === undefined ? null : { ...rec.decision, figures: undefined, timeline: undefined },
    };
  }

  return {
    tick(now = Date.now()) {
      running ??= (async () => {
        try {
          for (const m of opts.models) {
            try {
              await tickModel(m, now);
            } catch (err) {
              log.error('probation check failed; retried on the next tick', { model: m.model, err: errorMessage(err) });
            }
          }
        } finally {
          running = undefined;
        }
      })();
      return running;
    },
    view,
  };
}
