/**
 * A small cross-process lock file (`O_EXCL` create holding the owner's pid). A lock left by a
 * process that no longer exists (killed with SIGKILL mid-write) is taken over. Held only for the
 * short synchronous critical sections of the registry (allocating a version, appending audit).
 */
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { AligndError } from '../base/errors.js';

const sleepMs = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function withLock<T>(lockPath: string, fn: () => T, waitMs = 10_000): T {
  const deadline = Date.now() + waitMs;
  let emptySince: number | undefined;
  for (;;) {
    let fd: number | undefined;
    try {
      fd = openSync(lockPath, 'wx', 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (fd !== undefined) {
      try {
        writeSync(fd, String(process.pid));
      } finally {
        closeSync(fd);
      }
      try {
        return fn();
      } finally {
        rmSync(lockPath, { force: true });
      }
    }
    let owner = NaN;
    try {
      const text = readFileSync(lockPath, 'utf8').trim();
      owner = text === '' ? NaN : Number(text);
    } catch { /* gone meanwhile */ }
    // An empty file: the owner died between create and write (or is writing now); the pid check
    // below needs a number, so give it a moment before treating it as stale.
    if (Number.isNaN(owner)) emptySince ??= Date.now();
    else emptySince = undefined;
    if ((Number.isInteger(owner) && owner > 0 && owner !== process.pid && !alive(owner)) || (emptySince !== undefined && Date.now() - emptySince > 1000)) {
      rmSync(lockPath, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new AligndError('STORE_FAILED', `registry lock ${lockPath} is held by pid ${owner}`, { action: 'another alignd process is writing this registry; stop it, or remove the lock file if that process is gone' });
    }
    sleepMs(5);
  }
}
