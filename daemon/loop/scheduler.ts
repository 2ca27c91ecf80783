/**
 * When rounds run: the policy's cron schedule (node-cron), a minimum number of new training
 * examples, and manual triggers (admin API / CLI). One round at a time per model; a trigger that
 * arrives during a round is remembered and runs after it. A cron tick starts a round only when
 * there is new data (min_new_examples); a manual trigger always does.
 */
import { schedule, type ScheduledTask } from 'node-cron';
import { AligndError, errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';

export interface SchedulerModel {
  model: string;
  /** Current cron expression (from the hot-reloaded policy). */
  cron(): string;
  minNewExamples(): number;
  /** Training examples that arrived since the last finished round. */
  newExamples(): number;
  frozen(): boolean;
}

export interface Scheduler {
  /** Queue a round now (manual). Resolves when that round has run. */
  trigger(model: string, reason?: string): Promise<void>;
  /** Re-read each model's cron expression (after a policy edit). */
  reschedule(): void;
  running(model: string): boolean;
  /** Stop scheduling; resolves after the round in hand (if any) has ended or been abandoned. */
  stop(): Promise<void>;
}

export function createScheduler(opts: {
  models: SchedulerModel[];
  runRound: (model: string, trigger: string) => Promise<void>;
  log: Logger;
  /** How often the min-new-examples trigger is checked. */
  pollMs?: number;
  /** false: only manual triggers (the demo drives rounds itself, so its runs are reproducible). */
  autoTriggers?: boolean;
}): Scheduler {
  const auto = opts.autoTriggers !== false;
  const state = new Map(opts.models.map((m) => [m.model, {
    m, busy: undefined as Promise<void> | undefined, queued: undefined as { reason: string; waiters: Array<() => void> } | undefined,
    task: undefined as ScheduledTask | undefined, cronExpr: '',
  }]));
  let stopped = false;

  function start(model: string, reason: string): Promise<void> {
    const s = state.get(model);
    if (s === undefined) return Promise.reject(new Error(`no policy for model ${model}`));
    if (s.busy !== undefined) {
      s.queued ??= { reason, waiters: [] };
      return new Promise((resolve) => s.queued!.waiters.push(resolve));
    }
    s.busy = (async () => {
      try {
        await opts.runRound(model, reason);
      } catch (err) {
        if (err instanceof AligndError && err.code === 'ROUND_ABANDONED') opts.log.info('round abandoned for shutdown; it is redone after a restart', { model, trigger: reason });
        else opts.log.error('round failed', { model, trigger: reason, err: errorMessage(err) });
      } finally {
        s.busy = undefined;
        const q = s.queued;
        s.queued = undefined;
        if (q !== undefined && !stopped) void start(model, q.reason).then(() => q.waiters.forEach((w) => w()));
        else q?.waiters.forEach((w) => w());
      }
    })();
    return s.busy;
  }

  const due = (s: { m: SchedulerModel }, why: string): void => {
    if (stopped || s.m.frozen()) return;
    const n = s.m.newExamples();
    if (n < Math.max(1, s.m.minNewExamples())) return;
    void start(s.m.model, `${why} (${n} new examples)`);
  };

  function reschedule(): void {
    if (!auto) return;
    for (const s of state.values()) {
      const expr = s.m.cron();
      if (s.task !== undefined && expr === s.cronExpr) continue;
      void s.task?.destroy();
      s.cronExpr = expr;
      s.task = schedule(expr, () => due(s, `cron ${expr}`), { name: `alignd-${s.m.model}`, noOverlap: true });
    }
  }
  reschedule();
  const poll = setInterval(() => {
    if (!auto) return;
    for (const s of state.values()) if (s.busy === undefined) due(s, 'min_new_examples');
  }, opts.pollMs ?? 5000);
  poll.unref();

  return {
    trigger: (model, reason = 'manual') => start(model, reason),
    reschedule,
    running: (model) => state.get(model)?.busy !== undefined,
    async stop() {
      stopped = true;
      clearInterval(poll);
      for (const s of state.values()) await s.task?.destroy();
      await Promise.all([...state.values()].map((s) => s.busy));
    },
  };
}
