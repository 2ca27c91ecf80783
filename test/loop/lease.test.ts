/**
 * The rounds lease among replicas (daemon/loop/lease.ts), two holders on one directory with a
 * controlled clock: one holds at a time; renewal keeps it; expiry hands it over with a higher
 * fencing token; a stalled holder's commit is refused after the takeover; release hands it over at
 * once; a holder on this host whose process is gone is taken over without waiting for the ttl.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { openLease } from '../../daemon/loop/lease.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-lease-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
let clock = 1_000_000;
const now = (): number => clock;

t.test('one holder at a time; expiry hands over with a new token; the stalled holder is fenced', async (t) => {
  const a = openLease({ dir, model: 'tiny', ttlMs: 30_000, now });
  const b = openLease({ dir, model: 'tiny', ttlMs: 30_000, now });
  t.equal(a.tryAcquire(), true, 'a takes the free lease');
  t.equal(b.tryAcquire(), false, 'b cannot while a holds it');
  const t1 = a.token()!;
  t.equal(t1, 1);
  t.equal(a.fenced(t1, 'commit', () => 'written'), 'written', 'the holder commits');
  clock += 20_000;
  t.equal(a.tryAcquire(), true, 'a renews');
  t.equal(a.token(), t1, 'renewal keeps the token');
  clock += 25_000;
  t.equal(b.tryAcquire(), false, 'renewed: still a\'s 45 s after it first took it');
  clock += 10_000; // a stalled: 35 s since its renewal
  t.equal(a.held(), false, 'a sees its own ttl run out');
  t.equal(b.tryAcquire(), true, 'b takes the expired lease');
  t.equal(b.token(), 2, 'with a higher fencing token');
  t.throws(() => a.fenced(t1, 'registering the candidate', () => 'late write'), { code: 'LEASE_LOST', message: /registering the candidate: this replica no longer holds the lease on tiny \(token 1; the lease is now .*token 2\)/ });
  t.equal(a.tryAcquire(), false, 'a cannot take it back while b renews');
  b.release();
  t.equal(a.tryAcquire(), true, 'released: a takes it at once');
  t.equal(a.token(), 3);
  t.throws(() => b.fenced(2, 'commit', () => 0), { code: 'LEASE_LOST' });
});

t.test('a holder on this host whose process is gone is taken over at once', async (t) => {
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(dead.stdout);
  writeFileSync(join(dir, 'other.json'), JSON.stringify({ owner: `${hostname()}:${pid}:x`, host: hostname(), pid, token: 7, expires_at: clock + 60_000 }));
  const c = openLease({ dir, model: 'other', ttlMs: 30_000, now });
  t.equal(c.tryAcquire(), true, 'the dead holder\'s unexpired lease is taken');
  t.equal(c.token(), 8);
  const rec = JSON.parse(readFileSync(join(dir, 'other.json'), 'utf8')) as { owner: string };
  t.equal(rec.owner, c.owner);
  writeFileSync(join(dir, 'third.json'), JSON.stringify({ owner: `another-host:${pid}:x`, host: 'another-host', pid, token: 1, expires_at: clock + 60_000 }));
  t.equal(openLease({ dir, model: 'third', ttlMs: 30_000, now }).tryAcquire(), false, 'a holder on another host is waited for (its pid means nothing here)');
});
