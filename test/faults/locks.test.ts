/**
 * The registry's lock file under faults: an empty lock, a lock of a dead process, a lock holding
 * our own pid from a previous life (pid 1 in a restarted container), waiting without freezing the
 * event loop, and SIGKILLs of lock holders at random points (the lock is never left empty).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseOwner, withLock } from '../../daemon/registry/lock.js';
import { repoRoot } from '../harness/daemon.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'alignd-locks-'));
const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();

/** A child process that takes the lock, says `held`, and keeps it for `holdMs` (or loops taking it). */
function holder(lockPath: string, mode: 'hold' | 'loop', holdMs = 0) {
  const code = `
    const { withLock } = await import(${JSON.stringify(join(repoRoot, 'dist/daemon/registry/lock.js'))});
    if (${JSON.stringify(mode)} === 'hold') {
      await withLock(${JSON.stringify(lockPath)}, async () => { process.stdout.write('held\\n'); await new Promise((r) => setTimeout(r, ${holdMs})); });
      process.stdout.write('released\\n');
    } else {
      process.stdout.write('looping\\n');
      for (;;) await withLock(${JSON.stringify(lockPath)}, () => {});
    }`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const said = (word: string): Promise<void> => new Promise((resolve) => {
    const check = (): void => { if (out.includes(word)) resolve(); };
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); check(); });
    check();
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { child, said, exited };
}

t.test('a stale lock is taken over at once: empty, a dead pid, our own pid from a previous life', async (t) => {
  const dir = tmp();
  const cases: Array<[string, string]> = [
    ['an empty file', ''],
    ['a dead pid (older format: the pid alone)', '2147483646'],
    ['a dead pid', `2147483646 ${boot} 12345`],
    ['our own pid, started at another time (pid reuse, pid 1 after a container restart)', `${process.pid} ${boot} 1`],
    ['our own pid, another boot', `${process.pid} 00000000-0000-0000-0000-000000000000 1`],
  ];
  for (const [name, text] of cases) {
    const lock = join(dir, `${cases.findIndex((c) => c[0] === name)}.lock`);
    writeFileSync(lock, text);
    let ran = false;
    await withLock(lock, () => { ran = true; }, 3000);
    t.ok(ran, `${name}: taken over`);
  }
});

t.test('a lock held by a live process is waited for without freezing the event loop', async (t) => {
  const lock = join(tmp(), 'versions.lock');
  const h = holder(lock, 'hold', 1500);
  await h.said('held');
  let ticks = 0;
  const timer = setInterval(() => { ticks++; }, 10);
  let order = '';
  await withLock(lock, () => { order += 'ours'; }, 20_000);
  clearInterval(timer);
  await h.exited;
  t.equal(order, 'ours');
  t.ok(ticks > 5, `timers ran while we waited for the lock (${ticks} ticks)`);
});

t.test('callers in one process queue for the lock in order', async (t) => {
  const lock = join(tmp(), 'audit.lock');
  const seen: number[] = [];
  await Promise.all([0, 1, 2, 3, 4].map((i) => withLock(lock, async () => {
    seen.push(i);
    await new Promise((r) => setTimeout(r, 5));
    seen.push(i);
  })));
  t.same(seen, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], 'never two at once');
});

t.test('SIGKILL of a process taking and releasing the lock never leaves an empty lock', async (t) => {
  const lock = join(tmp(), 'versions.lock');
  for (let trial = 0; trial < 8; trial++) {
    const h = holder(lock, 'loop');
    await h.said('looping');
    await new Promise((r) => setTimeout(r, 20 + Math.floor(Math.random() * 200)));
    h.child.kill('SIGKILL');
    await h.exited;
    let text: string | undefined;
    try {
      text = readFileSync(lock, 'utf8');
    } catch { /* released before the kill */ }
    if (text !== undefined) t.ok(parseOwner(text) !== undefined, `trial ${trial}: the lock left behind names its owner (${JSON.stringify(text)})`);
    let ran = false;
    await withLock(lock, () => { ran = true; }, 3000);
    t.ok(ran, `trial ${trial}: taken over`);
  }
});
