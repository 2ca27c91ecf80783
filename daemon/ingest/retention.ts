/**
 * Retention on a schedule (`ingest.retention`): at start and then every hour, the buffer's
 * retention runs slice by slice (a few thousand rows per transaction) with the event loop free
 * between slices, so a first pass over years of events never stalls ingest or health checks.
 */
import { errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import type { ReplayBuffer } from '../store/buffer.js';

export interface RetentionConfig { maxAgeDays?: number | undefined; maxEvents?: number | undefined }

export interface Retention {
  /** One full pass now (resolves when done; a pass already running is joined, not doubled). */
  runNow(): Promise<{ events: number; deadLetters: number }>;
  /** Stop the schedule; resolves when a running pass has ended. */
  stop(): Promise<void>;
}

export function startRetention(buffer: ReplayBuffer, config: RetentionConfig, log: Logger, everyMs = 3_600_000): Retention {
  const policy = {
    ...(config.maxAgeDays === undefined ? {} : { maxAgeMs: config.maxAgeDays * 86_400_000 }),
    ...(config.maxEvents === undefined ? {} : { maxEvents: config.maxEvents }),
  };
  let running: Promise<{ events: number; deadLetters: number }> | undefined;
  let stopped = false;
  const pass = async (): Promise<{ events: number; deadLetters: number }> => {
    const total = { events: 0, deadLetters: 0 };
    for (;;) {
      if (stopped) break;
      const r = buffer.retainSlice(policy);
      total.events += r.events;
      total.deadLetters += r.deadLetters;
      if (r.events + r.deadLetters === 0) break;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    if (total.events + total.deadLetters > 0) log.info('retention: old feedback retired', { ...total, ...config });
    return total;
  };
  const runNow = (): Promise<{ events: number; deadLetters: number }> => {
    running ??= pass().finally(() => { running = undefined; });
    return running;
  };
  const tick = (): void => {
    runNow().catch((err: unknown) => log.error('retention failed; retried at the next tick', { err: errorMessage(err) }));
  };
  const active = policy.maxAgeMs !== undefined || policy.maxEvents !== undefined;
  const timer = active ? setInterval(tick, everyMs) : undefined;
  timer?.unref();
  if (active) setImmediate(tick);
  return {
    runNow,
    async stop() {
      stopped = true;
      if (timer !== undefined) clearInterval(timer);
      await running?.catch(() => undefined);
    },
  };
}
