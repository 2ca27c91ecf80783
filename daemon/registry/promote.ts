/**
 * Promotion and reconciliation: make one registry version the served one on every server target,
 * record who serves what, announce it, and retire adapters no longer needed.
 *
 * It works like a Kubernetes controller: the desired version comes from the registry or the
 * policy (a pin), the observed state from each target's own listing (vLLM's `/v1/models`, the
 * file-drop directory), and every pass pushes wherever the two disagree. A webhook has no
 * listing: its observed state is the record of pushes it acknowledged, so it is pushed again only
 * when that record lags (a receiver that forgets must be re-sent by a new promotion or a pin).
 *
 * - `deployed.json` gets `desired` before any push, then each target's result as it lands;
 *   `complete` turns true only when every target confirmed. `previous` is the rollback version:
 *   always the last version every target confirmed before `desired`, kept loaded beside it.
 * - Each target call has a deadline (the target's timeout plus a grace), and each target is tried
 *   with exponential backoff; an error marked permanent (rank above the server's maximum) is not
 *   retried, and the version is not pushed to that target again until `desired` changes.
 * - One operation at a time per registry. A pin (rollback) preempts: the push in hand is
 *   cancelled and operations queued before it are skipped, so a hung server cannot delay it.
 *   `cancelPromotions` does the same when the policy's targets change or the daemon stops.
 * - Announcement happens once per completed promotion; a failing publisher is logged and audited,
 *   never undoes the push (servers already serve it).
 */
import { AligndError, errorMessage, isPermanent } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { silentLogger } from '../base/log.js';
import { servedName } from '../base/names.js';
import type { Registry } from './registry.js';
import type { CanaryWeight, DeploymentState, TargetState } from './state.js';
import type { DeployRequest, PromotionPublisher, ServerTarget } from './targets.js';

export interface RetryPolicy {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}
export const defaultRetry: RetryPolicy = { attempts: 4, baseDelayMs: 500, maxDelayMs: 10_000 };

/** Deadline of one target call when the target states no timeout of its own. */
export const DEFAULT_CALL_DEADLINE_MS = 60_000;

export interface PromoteOptions {
  targets: ServerTarget[];
  publisher?: PromotionPublisher;
  retry?: RetryPolicy;
  /** Keep the previous version loaded too (a fast rollback); default true. */
  keepPrevious?: boolean;
  reason: string;
  log?: Logger;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Cancel work in hand and queued before this one (a pin / rollback). */
  preempt?: boolean;
  /** Aborts the operation (the daemon is stopping). */
  signal?: AbortSignal;
  /**
   * Staged rollout: the traffic share announced for this version (probation); null: all traffic.
   * Undefined keeps what deployed.json records for the same version. A change for the version
   * already served is announced again and re-sent to targets without a listing (a webhook), so
   * the user's router learns the new weight.
   */
  canary?: CanaryWeight | null;
}

export interface PromoteResult {
  version: string;
  name: string;
  complete: boolean;
  failed: Array<{ target: string; error: string; permanent?: boolean }>;
  retired: Record<string, string[]>;
  /** Targets that had lost a version the record said they served (a restarted server). */
  restored: string[];
}

/** A sleep that ends early when `signal` aborts. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => { clearTimeout(timer); signal.removeEventListener('abort', done); resolve(); };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Run one target call with a deadline and a cancel signal. The returned promise settles when the
 * call does, the deadline passes or `outer` aborts, whichever is first — even if the target
 * ignores its signal.
 */
export async function withDeadline<T>(what: string, ms: number, outer: AbortSignal, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ctl = new AbortController();
  const onOuter = (): void => ctl.abort(outer.reason);
  outer.addEventListener('abort', onOuter, { once: true });
  const timer = setTimeout(() => ctl.abort(new AligndError('SERVER_FAILED', `${what}: no answer within ${Math.round(ms / 100) / 10} s`, {
    action: 'check that the server is up and not overloaded; alignd tries again on the next reconcile' })), ms);
  try {
    if (outer.aborted) throw outer.reason as Error;
    return await new Promise<T>((resolve, reject) => {
      ctl.signal.addEventListener('abort', () => reject(ctl.signal.reason), { once: true });
      fn(ctl.signal).then(resolve, reject);
    });
  } finally {
    clearTimeout(timer);
    outer.removeEventListener('abort', onOuter);
  }
}

async function withRetry(fn: (signal: AbortSignal) => Promise<void>, retry: RetryPolicy, sleep: (ms: number, signal: AbortSignal) => Promise<void>, signal: AbortSignal, onFail: (err: unknown, attempt: number) => void): Promise<{ ok: boolean; attempts: number; error?: string; permanent?: boolean }> {
  let last: unknown;
  let attempt = 0;
  while (attempt < retry.attempts && !signal.aborted) {
    attempt++;
    try {
      await fn(signal);
      return { ok: true, attempts: attempt };
    } catch (err) {
      last = err;
      onFail(err, attempt);
      if (isPermanent(err)) return { ok: false, attempts: attempt, error: errorMessage(err), permanent: true };
      if (attempt < retry.attempts) await sleep(Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempt - 1)), signal);
    }
  }
  return { ok: false, attempts: attempt, error: last === undefined ? errorMessage(signal.reason) : errorMessage(last) };
}

// One operation at a time per registry in this process (the gate, an approval, a pin and the
// reconcile timer can ask at once); each waits for the one before it and then works from the state
// it left. `floor`: operations enqueued before it are skipped (a pin or a cancel superseded them).
interface Lane { tail: Promise<unknown>; seq: number; floor: number; running: AbortController | undefined }
const lanes = new Map<string, Lane>();

function laneOf(reg: Registry): Lane {
  let lane = lanes.get(reg.dir);
  if (lane === undefined) {
    lane = { tail: Promise.resolve(), seq: 0, floor: 0, running: undefined };
    lanes.set(reg.dir, lane);
  }
  return lane;
}

/** Cancel the operation in hand and skip those queued (the targets changed, or the daemon stops). */
export function cancelPromotions(reg: Registry, reason: string): void {
  const lane = laneOf(reg);
  lane.floor = lane.seq + 1;
  lane.running?.abort(new AligndError('SERVER_FAILED', `cancelled: ${reason}`));
}

function serialized<T>(reg: Registry, opts: { preempt?: boolean; signal?: AbortSignal }, skipped: () => T, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const lane = laneOf(reg);
  const seq = ++lane.seq;
  if (opts.preempt === true) {
    lane.floor = seq;
    lane.running?.abort(new AligndError('SERVER_FAILED', 'superseded by a pinned version'));
  }
  const run = async (): Promise<T> => {
    if (seq < lane.floor || opts.signal?.aborted === true) return skipped();
    const ctl = new AbortController();
    const onOuter = (): void => ctl.abort(opts.signal?.reason);
    opts.signal?.addEventListener('abort', onOuter, { once: true });
    lane.running = ctl;
    try {
      return await fn(ctl.signal);
    } finally {
      lane.running = undefined;
      opts.signal?.removeEventListener('abort', onOuter);
    }
  };
  const next = lane.tail.catch(() => undefined).then(run);
  lane.tail = next;
  return next;
}

/** Push `version` to every target that does not serve it yet. */
export function promote(reg: Registry, version: string, opts: PromoteOptions): Promise<PromoteResult> {
  const name = servedName(reg.model, version);
  const superseded = (): PromoteResult => ({ version, name, complete: false, failed: [{ target: '*', error: 'superseded before it started' }], retired: {}, restored: [] });
  return serialized(reg, opts, superseded, (signal) => converge(reg, version, opts, signal));
}

/**
 * One controller pass: observe every target and push the desired version (the policy's pin when
 * given, else the registry's) wherever it is missing; retire what is no longer needed. Never
 * preempts; skipped when a pin or a cancel superseded it.
 */
export function reconcile(reg: Registry, opts: Omit<PromoteOptions, 'reason' | 'preempt'> & { desired?: string; reason?: string }): Promise<PromoteResult | undefined> {
  return serialized(reg, { ...(opts.signal === undefined ? {} : { signal: opts.signal }) }, () => undefined, async (signal) => {
    const s = reg.deployment();
    const desired = opts.desired ?? s?.desired;
    if (desired === undefined) return undefined;
    return converge(reg, desired, { ...opts, reason: opts.reason ?? (s?.desired === desired ? s.reason : 'reconcile') }, signal);
  });
}

const freshTarget = (at: string): TargetState => ({ version: null, name: null, error: null, attempts: 0, refused: null, updated_at: at });

async function converge(reg: Registry, version: string, opts: PromoteOptions, signal: AbortSignal): Promise<PromoteResult> {
  const log = opts.log ?? silentLogger;
  const sleep = opts.sleep ?? abortableSleep;
  const retry = opts.retry ?? defaultRetry;
  const v = reg.get(version);
  if (v === undefined) throw new AligndError('CONFIG_INVALID', `${reg.model} has no version ${version}`, { action: 'pick a version the registry lists' });
  const check = reg.verifyVersion(version);
  if (!check.ok) throw new AligndError('STORE_FAILED', `${reg.model} ${version} fails its integrity check: ${check.reason}`, { action: 'do not serve it; restore the version from backup' });
  const name = servedName(reg.model, version);
  const now = (): string => new Date().toISOString();
  const before = reg.deployment();
  const changing = before?.desired !== version;
  // The rollback version is the last complete one: a partial push never becomes `previous`.
  const candidate = before === undefined ? null
    : changing ? (before.complete ? before.desired : before.last_complete)
      : (before.previous ?? before.last_complete);
  const previous = candidate === version ? (before?.previous === version ? null : (before?.previous ?? null)) : candidate;
  const canary = opts.canary !== undefined ? opts.canary : (changing ? null : before.canary);
  const canaryChanged = !changing && JSON.stringify(before.canary) !== JSON.stringify(canary);
  const state: DeploymentState = {
    desired: version, desired_name: name,
    reason: changing || canaryChanged ? opts.reason : before.reason,
    since: changing ? now() : before.since,
    complete: before?.complete === true && !changing,
    last_complete: before?.complete === true ? before.desired : (before?.last_complete ?? null),
    previous,
    targets: Object.fromEntries(opts.targets.map((t) => [t.id, before?.targets[t.id] ?? freshTarget(now())])),
    canary,
    // A file from before `announced` existed: a complete deployment there was announced already.
    announced: before === undefined ? null
      : before.announced !== undefined ? before.announced
        : before.complete ? { version: before.desired, canary: before.canary } : null,
  };
  let written = '';
  const save = (): void => {
    const text = JSON.stringify(state);
    if (text === written) return;
    reg.setDeployment(state);
    written = text;
  };
  if (!changing && JSON.stringify(before) === JSON.stringify(state)) written = JSON.stringify(state);
  save();
  if (changing) await reg.audit('promote.start', { version, name, previous, reason: opts.reason, targets: opts.targets.map((t) => t.id) });

  const req: DeployRequest = { model: reg.model, version, name, adapterDir: v.adapterDir, adapterSha256: v.manifest.adapter_sha256, baseModel: v.manifest.base_model.path,
    reason: state.reason, canary };
  const failed: PromoteResult['failed'] = [];
  const restored: string[] = [];
  const deadline = (t: ServerTarget): number => (t.timeoutMs === undefined ? DEFAULT_CALL_DEADLINE_MS : t.timeoutMs + 1000);
  // Targets in parallel; the state file is rewritten after each answer (one writer: this pass).
  await Promise.all(opts.targets.map(async (t) => {
    const cur = state.targets[t.id] ?? freshTarget(now());
    const recorded = cur.version === version && cur.error === null;
    // A new canary weight is news for a target that has no listing (a webhook receiver routes by it).
    let serving = recorded && !(canaryChanged && t.observe === undefined);
    if (t.observe !== undefined) {
      try {
        const listed = await withDeadline(`${t.id} listing`, deadline(t), signal, (s) => t.observe!(reg.model, s));
        serving = listed.includes(name);
      } catch (err) {
        failed.push({ target: t.id, error: errorMessage(err) });
        state.targets[t.id] = { ...cur, error: errorMessage(err), updated_at: now() };
        save();
        return;
      }
      // Recorded as serving it (an unreachable server keeps its version in the record, with the error).
      if (cur.version === version && !serving) {
        // The record said served, the server says otherwise: it restarted or someone unloaded it.
        log.warn('server target lost the served version; pushing it again', { target: t.id, version });
        await reg.audit('reconcile.drift', { target: t.id, version, name, observed: 'missing' });
        restored.push(t.id);
        state.complete = false;
        state.targets[t.id] = { ...cur, version: null, name: null, updated_at: now() };
        save();
      }
    }
    if (serving) {
      if (!recorded) {
        state.targets[t.id] = { ...cur, version, name, error: null, refused: null, updated_at: now() };
        save();
      }
      return;
    }
    state.complete = false;
    if (cur.refused === version) {
      // Refused for good (e.g. rank above --max-lora-rank): not retried until desired changes.
      failed.push({ target: t.id, error: cur.error ?? 'refused', permanent: true });
      return;
    }
    const r = await withRetry((s) => withDeadline(`${t.id} deploy ${name}`, deadline(t), s, (s2) => t.deploy(req, s2)), retry, sleep, signal,
      (err, attempt) => log.warn('push to server target failed', { target: t.id, version, attempt, permanent: isPermanent(err), err: errorMessage(err) }));
    const prevT = state.targets[t.id] ?? cur;
    state.targets[t.id] = r.ok
      ? { version, name, error: null, attempts: r.attempts, refused: null, updated_at: now() }
      : { version: prevT.version, name: prevT.name, error: r.error ?? 'failed', attempts: prevT.attempts + r.attempts, refused: r.permanent === true ? version : null, updated_at: now() };
    if (!r.ok) {
      failed.push({ target: t.id, error: r.error ?? 'failed', ...(r.permanent === true ? { permanent: true } : {}) });
      if (r.permanent === true) await reg.audit('promote.refused', { version, name, target: t.id, error: r.error });
    } else if (restored.includes(t.id)) {
      await reg.audit('reconcile.restored', { target: t.id, version, name });
    }
    save();
  }));
  state.complete = failed.length === 0;
  if (state.complete) state.last_complete = version;
  save();
  const retired: Record<string, string[]> = {};
  if (!state.complete) {
    const newFailure = changing || before?.complete === true || failed.some((f) => before?.targets[f.target]?.error !== f.error);
    if (newFailure) await reg.audit('promote.partial', { version, name, failed, serving: Object.fromEntries(Object.entries(state.targets).map(([k, s]) => [k, s.version])) });
    if (newFailure) log.error('promotion incomplete; the failed targets are retried by reconcile', { version, failed });
    return { version, name, complete: false, failed, retired, restored };
  }
  const announcement = { version, canary };
  if (JSON.stringify(state.announced) !== JSON.stringify(announcement)) {
    state.announced = announcement;
    save();
    await reg.audit('promote.done', { version, name, previous, reason: state.reason, targets: Object.keys(state.targets) });
    if (opts.publisher !== undefined) {
      try {
        await opts.publisher.publish({ schema: 'alignd.promotion/v1', model: reg.model, version, name, previous, reason: state.reason, adapter_sha256: v.manifest.adapter_sha256, ts: now(), canary, audit_head: reg.auditHead() });
      } catch (err) {
        log.error('announcing the promotion failed', { version, err: errorMessage(err) });
        await reg.audit('promote.announce_failed', { version, error: errorMessage(err) });
      }
    }
  }
  const keep = [name];
  if ((opts.keepPrevious ?? true) && previous !== null && reg.has(previous)) keep.push(servedName(reg.model, previous));
  for (const t of opts.targets) {
    try {
      retired[t.id] = await withDeadline(`${t.id} retire`, deadline(t), signal, (s) => t.retire(reg.model, keep, s));
    } catch (err) {
      log.warn('retiring old adapters failed', { target: t.id, err: errorMessage(err) });
    }
  }
  const anyRetired = Object.values(retired).some((r) => r.length > 0);
  if (anyRetired) await reg.audit('promote.retired', { keep, retired });
  return { version, name, complete: true, failed, retired, restored };
}
