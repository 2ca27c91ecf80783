/**
 * Promotion: make one registry version the served one on every server target, record who serves
 * what, announce it, and retire adapters no longer needed.
 *
 * - `deployed.json` gets `desired` before any push (reason and time), then each target's result as
 *   it lands; `complete` turns true only when every target confirmed. A partial failure therefore
 *   leaves a consistent record, and `reconcile` (called on a timer) pushes the lagging targets.
 * - Each target is tried with exponential backoff (base, ×2, capped); a target still failing after
 *   the attempts keeps its old version in the record with the error.
 * - Announcement happens once per completed promotion; a failing publisher is logged and audited,
 *   never undoes the push (servers already serve it).
 */
import { AligndError, errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { silentLogger } from '../base/log.js';
import { servedName } from '../base/names.js';
import type { Registry } from './registry.js';
import type { DeploymentState } from './state.js';
import type { PromotionPublisher, ServerTarget } from './targets.js';

export interface RetryPolicy {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}
export const defaultRetry: RetryPolicy = { attempts: 4, baseDelayMs: 500, maxDelayMs: 10_000 };

export interface PromoteOptions {
  targets: ServerTarget[];
  publisher?: PromotionPublisher;
  retry?: RetryPolicy;
  /** Keep the previous version loaded too (a fast rollback); default true. */
  keepPrevious?: boolean;
  reason: string;
  log?: Logger;
  sleep?: (ms: number) => Promise<void>;
}

export interface PromoteResult {
  version: string;
  name: string;
  complete: boolean;
  failed: Array<{ target: string; error: string }>;
  retired: Record<string, string[]>;
}

const defaultSleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function withRetry(fn: () => Promise<void>, retry: RetryPolicy, sleep: (ms: number) => Promise<void>, onFail: (err: unknown, attempt: number) => void): Promise<{ ok: boolean; attempts: number; error?: string }> {
  let last: unknown;
  for (let attempt = 1; attempt <= retry.attempts; attempt++) {
    try {
      await fn();
      return { ok: true, attempts: attempt };
    } catch (err) {
      last = err;
      onFail(err, attempt);
      if (attempt < retry.attempts) await sleep(Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempt - 1)));
    }
  }
  return { ok: false, attempts: retry.attempts, error: errorMessage(last) };
}

// One promotion at a time per registry in this process (the gate, an approval and a policy pin
// can ask at once); each waits for the one before it and then works from the state it left.
const inFlight = new Map<string, Promise<unknown>>();

/** Push `version` to every target (or only the lagging ones when it is already desired). */
export function promote(reg: Registry, version: string, opts: PromoteOptions): Promise<PromoteResult> {
  return serialized(reg, () => promoteNow(reg, version, opts));
}

function serialized<T>(reg: Registry, fn: () => Promise<T>): Promise<T> {
  const prev = inFlight.get(reg.dir) ?? Promise.resolve();
  const next = prev.catch(() => undefined).then(fn);
  inFlight.set(reg.dir, next);
  void next.finally(() => { if (inFlight.get(reg.dir) === next) inFlight.delete(reg.dir); }).catch(() => undefined);
  return next;
}

async function promoteNow(reg: Registry, version: string, opts: PromoteOptions): Promise<PromoteResult> {
  const log = opts.log ?? silentLogger;
  const sleep = opts.sleep ?? defaultSleep;
  const retry = opts.retry ?? defaultRetry;
  const v = reg.get(version);
  if (v === undefined) throw new AligndError('CONFIG_INVALID', `${reg.model} has no version ${version}`, { action: 'pick a version the registry lists' });
  const check = reg.verifyVersion(version);
  if (!check.ok) throw new AligndError('STORE_FAILED', `${reg.model} ${version} fails its integrity check: ${check.reason}`, { action: 'do not serve it; restore the version from backup' });
  const name = servedName(reg.model, version);
  const now = (): string => new Date().toISOString();
  const before = reg.deployment();
  const previous = before?.desired ?? null;
  const state: DeploymentState = {
    desired: version, desired_name: name,
    reason: before?.desired === version ? before.reason : opts.reason,
    since: before?.desired === version ? before.since : now(),
    complete: false,
    last_complete: before?.complete === true ? before.desired : (before?.last_complete ?? null),
    targets: Object.fromEntries(opts.targets.map((t) => [t.id, before?.targets[t.id] ?? { version: null, name: null, error: null, attempts: 0, updated_at: now() }])),
  };
  reg.setDeployment(state);
  if (before?.desired !== version) reg.audit('promote.start', { version, name, previous, reason: opts.reason, targets: opts.targets.map((t) => t.id) });

  const req = { model: reg.model, version, name, adapterDir: v.adapterDir, adapterSha256: v.manifest.adapter_sha256, baseModel: v.manifest.base_model.path };
  const failed: PromoteResult['failed'] = [];
  // Targets in parallel; the state file is rewritten after each answer (one writer: this loop).
  await Promise.all(opts.targets.map(async (t) => {
    const cur = state.targets[t.id];
    if (cur !== undefined && cur.version === version && cur.error === null) return;
    const r = await withRetry(() => t.deploy(req), retry, sleep, (err, attempt) => log.warn('push to server target failed', { target: t.id, version, attempt, err: errorMessage(err) }));
    const prevT = state.targets[t.id];
    state.targets[t.id] = r.ok
      ? { version, name, error: null, attempts: r.attempts, updated_at: now() }
      : { version: prevT?.version ?? null, name: prevT?.name ?? null, error: r.error ?? 'failed', attempts: (prevT?.attempts ?? 0) + r.attempts, updated_at: now() };
    if (!r.ok) failed.push({ target: t.id, error: r.error ?? 'failed' });
    reg.setDeployment(state);
  }));
  state.complete = failed.length === 0;
  if (state.complete) state.last_complete = version;
  reg.setDeployment(state);
  const retired: Record<string, string[]> = {};
  if (!state.complete) {
    reg.audit('promote.partial', { version, name, failed, serving: Object.fromEntries(Object.entries(state.targets).map(([k, s]) => [k, s.version])) });
    log.error('promotion incomplete; will retry the failed targets', { version, failed });
    return { version, name, complete: false, failed, retired };
  }
  if (before?.desired !== version || before.complete === false) {
    reg.audit('promote.done', { version, name, previous, reason: state.reason, targets: Object.keys(state.targets) });
    if (opts.publisher !== undefined) {
      try {
        await opts.publisher.publish({ schema: 'alignd.promotion/v1', model: reg.model, version, name, previous, reason: state.reason, adapter_sha256: v.manifest.adapter_sha256, ts: now() });
      } catch (err) {
        log.error('announcing the promotion failed', { version, err: errorMessage(err) });
        reg.audit('promote.announce_failed', { version, error: errorMessage(err) });
      }
    }
  }
  const keep = [name];
  if ((opts.keepPrevious ?? true) && previous !== null && previous !== version && reg.has(previous)) keep.push(servedName(reg.model, previous));
  for (const t of opts.targets) {
    try {
      retired[t.id] = await t.retire(reg.model, keep);
    } catch (err) {
      log.warn('retiring old adapters failed', { target: t.id, err: errorMessage(err) });
    }
  }
  const anyRetired = Object.values(retired).some((r) => r.length > 0);
  if (anyRetired) reg.audit('promote.retired', { keep, retired });
  return { version, name, complete: true, failed, retired };
}

/** Retry lagging targets of the desired version (no-op when complete). */
export function reconcile(reg: Registry, opts: Omit<PromoteOptions, 'reason'>): Promise<PromoteResult | undefined> {
  return serialized(reg, async () => {
    const s = reg.deployment();
    if (s === undefined) return undefined;
    const lagging = opts.targets.some((t) => s.targets[t.id]?.version !== s.desired || s.targets[t.id]?.error !== null);
    if (s.complete && !lagging) return undefined;
    return promoteNow(reg, s.desired, { ...opts, reason: s.reason });
  });
}
