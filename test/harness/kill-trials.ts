/**
 * kill -9 at random points, for test/faults/kill.test.ts (a few trials) and `npm run bench:faults`
 * (hundreds): what survives must be whole.
 *
 * - ingest: the real daemon (--ingest-only) takes NDJSON batches over HTTP and is killed at a
 *   random moment; a client resends every batch not answered 202 (as a producer does). In the
 *   end every event is stored once, every acknowledged one was there, and no event's training
 *   examples were derived twice.
 * - promotion: test/harness/registry-writer.ts registers versions and promotes each to a
 *   file-drop target, killed at a random moment; in the end no version is half-written, the
 *   audit chain verifies, gc kept its bound, the deployed pointer and every served directory
 *   name whole versions.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { adapterDigest, openRegistry } from '../../daemon/registry/registry.js';
import { spawnDaemon, repoRoot } from './daemon.js';
import { makeEvent } from './events.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface IngestKillResult {
  trials: number;
  events: number;
  acknowledged: number;
  stored: number;
  /** Acknowledged (202) or sent events missing after the last resend. */
  lost: number;
  /** Events stored more than once, or whose examples were derived more than once. */
  duplicated: number;
}

export async function ingestKillTrials(trials: number, opts: { batch?: number; maxKillMs?: number; rand?: () => number } = {}): Promise<IngestKillResult> {
  const rand = opts.rand ?? Math.random;
  const batchSize = opts.batch ?? 200;
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-kill-ingest-'));
  const pending: string[][] = []; // batches (as lines) not yet answered 202
  const acknowledged = new Set<string>();
  const all = new Set<string>();
  let next = 0;
  const newBatch = (): string[] => Array.from({ length: batchSize }, () => {
    const i = next++;
    const e = makeEvent(i, { event_id: `kill-${i}` });
    all.add(e.event_id);
    return JSON.stringify(e);
  });
  const post = async (url: string, lines: string[]): Promise<boolean> => {
    try {
      const r = await fetch(`${url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: lines.join('\n') + '\n' });
      await r.arrayBuffer();
      return r.status === 202;
    } catch {
      return false; // the daemon died under us: not acknowledged, sent again
    }
  };
  for (let trial = 0; trial <= trials; trial++) {
    const d = await spawnDaemon(['--data-dir', dataDir]);
    const last = trial === trials;
    let killed = false;
    let firstAck: () => void = () => {};
    const acked = new Promise<void>((r) => { firstAck = r; });
    const sender = (async () => {
      while (!killed) {
        const lines = pending.shift() ?? (last ? undefined : newBatch());
        if (lines === undefined) return;
        if (await post(d.url, lines)) {
          for (const l of lines) acknowledged.add((JSON.parse(l) as { event_id: string }).event_id);
          firstAck();
        } else {
          pending.push(lines);
          if (killed) return;
        }
      }
    })();
    if (last) {
      await sender; // the final run: resend everything left, then stop cleanly
      await d.stop('SIGTERM');
    } else {
      // Odd trials kill while batches are flowing (after this run's first 202), even ones any time after start.
      if (trial % 2 === 1) await Promise.race([acked, sender]);
      await sleep(Math.floor(rand() * (opts.maxKillMs ?? 400)));
      await d.stop('SIGKILL');
      killed = true;
      await sender;
    }
  }
  const db = new Database(join(dataDir, 'buffer.sqlite'), { readonly: true });
  try {
    const ids = new Set((db.prepare('SELECT event_id FROM events').all() as Array<{ event_id: string }>).map((r) => r.event_id));
    let lost = 0;
    for (const id of all) if (!ids.has(id)) lost++;
    for (const id of acknowledged) if (!ids.has(id)) lost++;
    const twice = (db.prepare('SELECT count(*) - count(DISTINCT event_id) AS n FROM events').get() as { n: number }).n;
    // preference events derive exactly one pair each: more is a derivation done twice
    const derivedTwice = (db.prepare(`SELECT count(*) AS n FROM (SELECT event_seq FROM examples WHERE origin_kind = 'preference' GROUP BY event_seq HAVING count(*) > 1)`).get() as { n: number }).n;
    return { trials, events: all.size, acknowledged: acknowledged.size, stored: ids.size, lost, duplicated: twice + derivedTwice };
  } finally {
    db.close();
  }
}

export interface PromotionKillResult {
  trials: number;
  /** Versions the writers reported committed. */
  committed: number;
  versions: number;
  halfWritten: number;
  auditOk: boolean;
  gcBoundOk: boolean;
  deployedOk: boolean;
  /** Served directories (file-drop) whose content differs from their registry version. */
  servedBad: number;
  problems: string[];
}

export async function promotionKillTrials(trials: number, opts: { maxKillMs?: number; rand?: () => number } = {}): Promise<PromotionKillResult> {
  const rand = opts.rand ?? Math.random;
  const root = mkdtempSync(join(tmpdir(), 'alignd-kill-promote-'));
  const served = join(root, 'served');
  const writer = join(repoRoot, 'dist/test/harness/registry-writer.js');
  const committed = new Set<string>();
  for (let trial = 0; trial < trials; trial++) {
    const child = spawn(process.execPath, [writer, join(root, 'registry'), 'tiny', String(trial), served], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const said = (word: RegExp): Promise<void> => new Promise<void>((resolve) => {
      const check = (): void => { if (word.test(out)) resolve(); };
      child.stdout.on('data', check);
      check();
    });
    child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    await Promise.race([said(/ready/), exited]);
    // Odd trials kill while versions are being promoted (after this run's first commit), even ones any time after start.
    if (trial % 2 === 1) await Promise.race([said(/committed/), exited]);
    await sleep(Math.floor(rand() * (opts.maxKillMs ?? 400)));
    child.kill('SIGKILL');
    await exited;
    for (const m of out.matchAll(/committed (v\d+)/g)) committed.add(m[1]!);
  }
  const problems: string[] = [];
  const reg = openRegistry(join(root, 'registry'), 'tiny');
  await reg.cleanStaging(); // what the next start does
  const versions = reg.list();
  let halfWritten = 0;
  for (const v of versions) {
    const check = reg.verifyVersion(v.version);
    if (!check.ok) {
      halfWritten++;
      problems.push(`${v.version}: ${check.reason}`);
    }
  }
  const audit = reg.verifyAudit();
  if (!audit.ok) problems.push(`audit: ${audit.reason} at line ${audit.badLine}`);
  const created = new Set(reg.auditRecords().filter((r) => r.event === 'version.create').map((r) => r['version']));
  for (const v of versions) if (!created.has(v.version)) problems.push(`${v.version} has no version.create record`);
  // gc keeps the newest 5 plus the deployed, last complete and served versions; one more may be in flight.
  const gcBoundOk = versions.length <= 5 + 3 + 1;
  if (!gcBoundOk) problems.push(`${versions.length} versions after gc(5)`);
  const d = reg.deployment();
  const deployedOk = d === undefined || (reg.has(d.desired) && (d.last_complete === null || reg.has(d.last_complete)));
  if (!deployedOk) problems.push(`deployed.json names a missing version: ${JSON.stringify(d)}`);
  let servedBad = 0;
  if (existsSync(served)) {
    for (const e of readdirSync(served).filter((n) => /^tiny-v\d+$/.test(n))) {
      const v = reg.get(e.slice('tiny-'.length));
      if (v !== undefined && adapterDigest(join(served, e)).sha256 !== v.manifest.adapter_sha256) {
        servedBad++;
        problems.push(`served ${e} differs from the registry's`);
      }
    }
  }
  return { trials, committed: committed.size, versions: versions.length, halfWritten, auditOk: audit.ok, gcBoundOk, deployedOk, servedBad, problems };
}
