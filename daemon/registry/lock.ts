/**
 * A small cross-process lock file for the registry's short critical sections (allocating a
 * version, recording a decision, appending audit, gc).
 *
 * - Never empty: the owner's identity is written to a temp file first and the lock is that file
 *   hard-linked to the lock path (link(2) fails with EEXIST when the lock is held), so a kill at
 *   any point leaves no lock or a complete one.
 * - The identity is pid + boot id + the process's start time (Linux: /proc/self/stat field 22).
 *   A lock is stale when its owner is not alive as that very process: a dead pid, another boot,
 *   or the same pid started at another time (pid reuse; pid 1 in a restarted container). A stale
 *   lock, or one that does not parse (an empty file from an older alignd), is taken over at once.
 * - Taking over goes through a second lock (`<lock>.break`) and re-reads the lock inside it, so
 *   two waiters that both saw the same stale lock cannot remove each other's fresh one.
 * - Waiting never blocks the event loop: callers in this process queue on a promise, other
 *   processes are polled with timers (no Atomics.wait).
 */
import { linkSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { AligndError } from '../base/errors.js';
import { processAlive } from '../base/process.js';

export interface LockOwner { pid: number; boot: string; start: string }

/** What readOr answers for a lock file that is not there. */
const GONE = '\u0000gone';

const readOr = (path: string, fallback: string): string => {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return fallback;
  }
};

/** The boot id, and a process's start time in clock ticks since boot ('' where /proc has none). */
const BOOT = readOr('/proc/sys/kernel/random/boot_id', '');
export function processStart(pid: number): string | undefined {
  const stat = readOr(`/proc/${pid}/stat`, '');
  if (stat === '') return undefined;
  // Field 2 (comm) is in parentheses and may hold spaces: count fields after the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}
/** Where /proc is missing (not Linux), a random token stands in for the start time: only `pid` can be checked. */
const SELF: LockOwner = { pid: process.pid, boot: BOOT, start: processStart(process.pid) ?? `nonce-${randomBytes(8).toString('hex')}` };

/** Parse a lock file's text: `pid boot start`, or a bare pid (older alignd); undefined when it does not parse. */
export function parseOwner(text: string): LockOwner | undefined {
  const [pid, boot = '', start = '', ...rest] = text.trim().split(' ');
  const n = Number(pid);
  if (!Number.isInteger(n) || n <= 0 || rest.length > 0) return undefined;
  return { pid: n, boot, start };
}

/** Is the process that wrote this identity still running (the same process, not one reusing its pid)? */
export function ownerAlive(o: LockOwner): boolean {
  if (o.boot !== '' && BOOT !== '' && o.boot !== BOOT) return false;
  if (o.pid === SELF.pid) return o.start === SELF.start;
  if (!processAlive(o.pid)) return false;
  if (o.start === '') return true; // a bare pid: alive is all we can tell
  const start = processStart(o.pid);
  return start === undefined || start === o.start;
}

const format = (o: LockOwner): string => `${o.pid} ${o.boot} ${o.start}`;

/** One attempt: true when the lock is ours now. */
function tryLink(lockPath: string): boolean {
  const tmp = `${lockPath}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, format(SELF));
  try {
    linkSync(tmp, lockPath);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** Remove `lockPath` if it still holds the stale text `seen`; under `<lock>.break` so two breakers cannot race. */
function breakStale(lockPath: string, seen: string): void {
  const breaker = `${lockPath}.break`;
  if (!tryLink(breaker)) {
    const owner = parseOwner(readOr(breaker, ''));
    if (owner === undefined || !ownerAlive(owner)) rmSync(breaker, { force: true }); // a breaker that died breaking
    return;
  }
  try {
    if (readOr(lockPath, GONE) === seen) rmSync(lockPath, { force: true });
  } finally {
    rmSync(breaker, { force: true });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Lock paths held or awaited in this process: later callers queue behind earlier ones. */
const queues = new Map<string, Promise<unknown>>();

/**
 * Run `fn` holding the lock at `lockPath`. Waits (asynchronously) up to `waitMs` for another
 * process to release it; a stale lock is taken over at once.
 */
export function withLock<T>(lockPath: string, fn: () => T | Promise<T>, waitMs = 10_000): Promise<T> {
  const prev = queues.get(lockPath) ?? Promise.resolve();
  const run = prev.catch(() => undefined).then(async () => {
    await acquire(lockPath, waitMs);
    try {
      return await fn();
    } finally {
      rmSync(lockPath, { force: true });
    }
  });
  queues.set(lockPath, run);
  void run.finally(() => { if (queues.get(lockPath) === run) queues.delete(lockPath); }).catch(() => undefined);
  return run;
}

async function acquire(lockPath: string, waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
    if (tryLink(lockPath)) return;
    const text = readOr(lockPath, GONE);
    if (text !== GONE) {
      const owner = parseOwner(text);
      if (owner === undefined || !ownerAlive(owner)) {
        breakStale(lockPath, text);
      } else if (Date.now() > deadline) {
        throw new AligndError('STORE_FAILED', `registry lock ${lockPath} is held by pid ${owner.pid} (still running)`, {
          action: 'another alignd process (the daemon, or a CLI command) is writing this registry; retry when it is done' });
      }
    }
    await sleep(delay);
  }
}
