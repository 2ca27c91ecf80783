/**
 * Which replica runs a model's rounds: a lease in the shared data directory, so that several
 * alignd replicas on one store (and one Kafka consumer group) train each model exactly once.
 *
 *   <dataDir>/leases/<model>.json   {owner, host, pid, token, expires_at}
 *   <dataDir>/leases/<model>.lock   a mutex held only for the read-modify-write of the lease
 *
 * A replica takes a free or expired lease and renews it every ttl/3; a replica that dies stops
 * renewing and another takes over after the ttl (at once when the dead holder was on this host:
 * its pid is gone). Every takeover increments `token` (the fencing token): the round's commit
 * points (registering a version, recording the outcome) run inside `fenced`, which holds the mutex
 * and checks that this replica still holds the lease under the token it started with, so a replica
 * that stalled past its ttl cannot write after another took over. The gate (which may promote)
 * is asynchronous and runs after such a check rather than inside the mutex: a takeover during the
 * gate itself is caught at the outcome's record, and the window is redone by the new holder.
 *
 * Why a lock file rather than Kafka partition ownership: the registry and the buffer it guards
 * already live in this directory, so the lease fences exactly the writes it must; it works for
 * HTTP- and file-fed replicas as well as Kafka ones; and it has a token, where a consumer group
 * rebalance revokes a partition while the old owner may still be mid-round. Its assumption:
 * replicas' clocks agree to well within the ttl (they share a host or NTP).
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { AligndError } from '../base/errors.js';
import { writeFileAtomicDurable } from '../base/fs-durable.js';
import { processAlive } from '../base/process.js';

interface LeaseRecord { owner: string; host: string; pid: number; token: number; expires_at: number }

export interface Lease {
  readonly model: string;
  readonly owner: string;
  /** Take the lease when free, expired or ours (renewing it); returns whether this replica holds it now. */
  tryAcquire(): boolean;
  /** Whether this replica held the lease at its last acquire/renew and the ttl has not run out since. */
  held(): boolean;
  /** The fencing token of our tenure (null when not held). */
  token(): number | null;
  /** Run `fn` (synchronous: a commit point) under the mutex, only while still the holder under `token`. */
  fenced<T>(token: number, what: string, fn: () => T): T;
  /** Give the lease up (shutdown): another replica takes it at once. */
  release(): void;
}

export interface LeaseOptions {
  dir: string;
  model: string;
  ttlMs: number;
  now?: () => number;
}

/** A mutex older than this is left by a process killed inside the (sub-millisecond) critical section. */
const STALE_MUTEX_MS = 5000;

export function openLease(o: LeaseOptions): Lease {
  const now = o.now ?? Date.now;
  mkdirSync(o.dir, { recursive: true });
  const file = join(o.dir, `${o.model}.json`);
  const mutex = join(o.dir, `${o.model}.lock`);
  const host = hostname();
  const owner = `${host}:${process.pid}:${randomBytes(4).toString('hex')}`;
  let mine: { token: number; until: number } | null = null;

  const locked = <T>(fn: () => T): T => {
    const deadline = now() + 10_000;
    for (;;) {
      let fd: number | undefined;
      try {
        fd = openSync(mutex, 'wx', 0o644);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      if (fd !== undefined) {
        try {
          writeSync(fd, owner);
        } finally {
          closeSync(fd);
        }
        try {
          return fn();
        } finally {
          rmSync(mutex, { force: true });
        }
      }
      try {
        if (Date.now() - statSync(mutex).mtimeMs > STALE_MUTEX_MS) rmSync(mutex, { force: true });
      } catch { /* removed meanwhile */ }
      if (now() > deadline) throw new AligndError('LEASE_LOST', `lease mutex ${mutex} stays taken`, { action: `remove ${mutex} if no alignd process is running` });
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2);
    }
  };

  const read = (): LeaseRecord | null => {
    if (!existsSync(file)) return null;
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as LeaseRecord;
    } catch {
      return null; // unreadable: treated as free; the token restarts above any we can see
    }
  };
  /** Ours, or free: expired, or held by a process of this host that no longer exists. */
  const takeable = (r: LeaseRecord | null): boolean => r === null || r.owner === owner || r.expires_at <= now() || (r.host === host && r.pid !== process.pid && !processAlive(r.pid));

  return {
    model: o.model,
    owner,
    tryAcquire() {
      return locked(() => {
        const r = read();
        if (!takeable(r)) {
          mine = null;
          return false;
        }
        const token = r !== null && r.owner === owner && mine !== null ? r.token : (r?.token ?? 0) + 1;
        const until = now() + o.ttlMs;
        writeFileAtomicDurable(file, JSON.stringify({ owner, host, pid: process.pid, token, expires_at: until } satisfies LeaseRecord) + '\n');
        mine = { token, until };
        return true;
      });
    },
    held: () => mine !== null && mine.until > now(),
    token: () => (mine !== null && mine.until > now() ? mine.token : null),
    fenced(token, what, fn) {
      return locked(() => {
        const r = read();
        if (r === null || r.owner !== owner || r.token !== token || r.expires_at <= now()) {
          mine = null;
          throw new AligndError('LEASE_LOST', `${what}: this replica no longer holds the lease on ${o.model} (token ${token}; the lease is now ${r === null ? 'free' : `${r.owner}'s, token ${r.token}`})`, {
            action: 'none: another replica runs this model\'s rounds; this round is abandoned without writing',
          });
        }
        return fn();
      });
    },
    release() {
      locked(() => {
        const r = read();
        if (r !== null && r.owner === owner) writeFileAtomicDurable(file, JSON.stringify({ ...r, expires_at: 0 }) + '\n');
        mine = null;
      });
    },
  };
}
