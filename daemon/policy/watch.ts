/**
 * Hot reload of a policy file. fs.watch on the file's directory (editors replace files by rename,
 * which a watch on the file itself misses) plus a poll as a fallback for filesystems without
 * change events (NFS, some container mounts); both funnel into one debounced check that compares
 * the content hash with the last one seen.
 *
 * A valid edit is applied (onApply) and audited with the changed paths; an invalid one (bad YAML,
 * unknown field, out-of-range value, pinned version missing from the registry, a changed `model`)
 * is refused with file/path/reason, logged once, audited, counted, and the last good policy stays
 * in force. `model` names the policy stream, its registry and buffer rows: a running daemon cannot
 * switch it, so an edit of it is refused (restart with the new file instead).
 *
 * An audit write that fails (a corrupt or unwritable log) is logged and counted; it never stops
 * the watcher, and an edit is applied even when it could not be audited (a rollback must happen).
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import { errorMessage } from '../base/errors.js';
import { silentLogger, type Logger } from '../base/log.js';
import { formatProblems, readPolicyFile, type PolicyContext, type PolicyProblem } from './load.js';
import type { Policy } from './schema.js';
import { AligndError } from '../base/errors.js';

export interface PolicyWatcherOptions {
  file: string;
  ctx?: PolicyContext;
  /** Called with each applied policy (not the initial one); may be async. */
  onApply?: (policy: Policy, previous: Policy, changed: string[]) => void | Promise<void>;
  onRefuse?: (problems: PolicyProblem[]) => void;
  audit?: (event: string, fields: Record<string, unknown>) => void | Promise<unknown>;
  log?: Logger;
  pollMs?: number;
  debounceMs?: number;
}

export interface PolicyWatcher {
  current(): Policy;
  /** Problems of the last refused edit (cleared when a valid edit is applied). */
  lastRefusal(): PolicyProblem[] | undefined;
  stats: { applied: number; refused: number; auditFailures: number };
  /** Check the file now (what the watchers call). */
  check(): Promise<void>;
  stop(): void;
}

/** Dotted paths whose values differ between two plain JSON values. */
export function changedPaths(a: unknown, b: unknown, prefix = ''): string[] {
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isObj(a) && isObj(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedPaths(a[k], b[k], prefix === '' ? k : `${prefix}.${k}`));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix === '' ? '(root)' : prefix];
}

export function watchPolicy(opts: PolicyWatcherOptions): PolicyWatcher {
  const log = opts.log ?? silentLogger;
  const first = readPolicyFile(opts.file, opts.ctx);
  if (!first.ok) throw new AligndError('POLICY_INVALID', `invalid policy:\n${formatProblems(first.problems)}`, { action: 'fix the listed fields; `alignd policy check FILE` re-checks' });
  let current = first.policy;
  let lastSha = first.sha256;
  let refusal: PolicyProblem[] | undefined;
  const stats = { applied: 0, refused: 0, auditFailures: 0 };
  const audit = async (event: string, fields: Record<string, unknown>): Promise<void> => {
    try {
      await opts.audit?.(event, fields);
    } catch (err) {
      stats.auditFailures++;
      log.error('writing the policy audit record failed; the watcher goes on', { file: opts.file, event, err: errorMessage(err) });
    }
  };
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;

  const checkOnce = async (): Promise<void> => {
    let r = readPolicyFile(opts.file, opts.ctx);
    if (r.sha256 === lastSha || stopped) return;
    if (r.sha256 === '' && !r.ok) {
      // Missing for a moment (an editor's delete-then-write); the next event or poll settles it.
      if (refusal === undefined) log.debug('policy file unreadable; keeping the last good policy', { file: opts.file });
      return;
    }
    lastSha = r.sha256;
    if (r.ok && r.policy.model !== current.model) {
      r = { ok: false, sha256: r.sha256, problems: [{ file: opts.file, path: 'model',
        reason: `model cannot change while the daemon runs (${JSON.stringify(current.model)} → ${JSON.stringify(r.policy.model)}): it names the registry and the feedback stream; restart alignd with the renamed policy` }] };
    }
    if (!r.ok) {
      stats.refused++;
      refusal = r.problems;
      log.error('policy edit refused; the last good policy stays in force', { file: opts.file, problems: r.problems });
      await audit('policy.refused', { file: opts.file, sha256: r.sha256, problems: r.problems });
      opts.onRefuse?.(r.problems);
      return;
    }
    const previous = current;
    const changed = changedPaths(previous, r.policy);
    current = r.policy;
    refusal = undefined;
    stats.applied++;
    log.info('policy applied', { file: opts.file, changed });
    await audit('policy.applied', { file: opts.file, sha256: r.sha256, changed, deployment: r.policy.deployment });
    try {
      await opts.onApply?.(r.policy, previous, changed);
    } catch (err) {
      log.error('applying the policy failed', { file: opts.file, err: errorMessage(err) });
    }
  };

  const check = async (): Promise<void> => {
    if (running !== undefined) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await checkOnce();
        } while (again && !stopped);
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  let timer: NodeJS.Timeout | undefined;
  const debounced = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = setTimeout(() => { timer = undefined; void check(); }, opts.debounceMs ?? 200);
  };
  let watcher: FSWatcher | undefined;
  try {
    const name = basename(opts.file);
    watcher = watch(dirname(opts.file), { persistent: false }, (_ev, f) => {
      if (f === null || f === name || f.toString().startsWith(`.${name}`)) debounced();
    });
    watcher.on('error', (err) => log.warn('policy watch failed; polling only', { file: opts.file, err: err.message }));
  } catch (err) {
    log.warn('fs.watch unavailable; polling only', { file: opts.file, err: errorMessage(err) });
  }
  const poll = setInterval(() => void check(), opts.pollMs ?? 2000);
  poll.unref();

  return {
    current: () => current,
    lastRefusal: () => refusal,
    stats,
    check,
    stop() {
      stopped = true;
      watcher?.close();
      clearInterval(poll);
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}
