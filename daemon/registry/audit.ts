/**
 * The append-only audit log: JSON lines, each carrying `prev`, the sha256 of the previous line's
 * bytes (the first line's `prev` is 64 zeros), and `seq`. Editing, reordering or deleting a line in
 * the middle breaks the chain and `verifyAudit` names the first bad line. Truncating the tail cannot
 * be detected from the file alone; `head` (the last line's hash) is published in status output so
 * that it can be recorded elsewhere.
 *
 * A crash in the middle of an append can leave a final line without its newline; that torn tail
 * was never acknowledged, so the next append cuts it off (and says so in its own record), and
 * verification reports it rather than calling it tampering.
 */
import { appendFileSync, closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { AligndError } from '../base/errors.js';
import { withLock } from './lock.js';

export const GENESIS = '0'.repeat(64);
const sha256 = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');

export interface AuditRecord {
  seq: number;
  ts: string;
  prev: string;
  /** What happened: `version.create`, `gate.decision`, `promote.done`, `policy.applied`, ... */
  event: string;
  [field: string]: unknown;
}

export interface AuditVerification {
  ok: boolean;
  records: number;
  /** sha256 of the last complete line (GENESIS when empty). */
  head: string;
  /** 1-based line number and reason of the first break in the chain. */
  badLine?: number;
  reason?: string;
  /** An incomplete final line from an interrupted append (not counted as tampering). */
  tornTail: boolean;
}

function lastCompleteLine(path: string): { line: string | undefined; completeBytes: number; size: number } {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    // Read backwards in chunks until we have the last full line.
    let end = size;
    let tail = Buffer.alloc(0);
    while (end > 0) {
      const start = Math.max(0, end - 65536);
      const chunk = Buffer.alloc(end - start);
      readSync(fd, chunk, 0, chunk.length, start);
      tail = Buffer.concat([chunk, tail]);
      end = start;
      const lastNl = tail.lastIndexOf(0x0a);
      if (lastNl < 0) continue;
      const prevNl = tail.lastIndexOf(0x0a, lastNl - 1);
      if (prevNl >= 0 || end === 0) {
        const completeBytes = end + lastNl + 1;
        return { line: tail.subarray(prevNl + 1, lastNl).toString('utf8'), completeBytes, size };
      }
    }
    return { line: undefined, completeBytes: 0, size };
  } finally {
    closeSync(fd);
  }
}

/** Append one record (under the registry's lock); returns it as written. */
export function appendAudit(path: string, event: string, fields: Record<string, unknown> = {}): AuditRecord {
  return withLock(`${path}.lock`, () => {
    let prev = GENESIS;
    let seq = 1;
    let torn: number | undefined;
    if (existsSync(path)) {
      const last = lastCompleteLine(path);
      if (last.completeBytes < last.size) {
        torn = last.size - last.completeBytes;
        const fd = openSync(path, 'r+');
        try {
          ftruncateSync(fd, last.completeBytes);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      }
      if (last.line !== undefined) {
        prev = sha256(last.line);
        let lastSeq: unknown;
        try {
          lastSeq = (JSON.parse(last.line) as AuditRecord).seq;
        } catch { /* reported below */ }
        if (typeof lastSeq !== 'number') {
          // Fail closed: nothing more is recorded (or done) until a person looks at the log.
          throw new AligndError('STORE_FAILED', `the last line of the audit log ${path} is not an audit record`, { action: 'run `alignd registry verify MODEL`; restore the log from backup' });
        }
        seq = lastSeq + 1;
      }
    }
    const record: AuditRecord = { seq, ts: new Date().toISOString(), prev, event, ...fields, ...(torn === undefined ? {} : { tornTailBytesDropped: torn }) };
    const fd = openSync(path, 'a', 0o644);
    try {
      appendFileSync(fd, JSON.stringify(record) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    return record;
  });
}

export function readAudit(path: string): AuditRecord[] {
  if (!existsSync(path)) return [];
  const text = readFileSync(path, 'utf8');
  const lines = text.split('\n');
  lines.pop(); // after the final newline, or a torn tail
  return lines.map((l) => JSON.parse(l) as AuditRecord);
}

export function verifyAudit(path: string): AuditVerification {
  if (!existsSync(path)) return { ok: true, records: 0, head: GENESIS, tornTail: false };
  const buf = readFileSync(path);
  const text = buf.toString('utf8');
  const parts = text.split('\n');
  const tail = parts.pop() ?? '';
  let prev = GENESIS;
  for (let i = 0; i < parts.length; i++) {
    const line = parts[i] as string;
    let rec: AuditRecord;
    try {
      rec = JSON.parse(line) as AuditRecord;
    } catch {
      return { ok: false, records: i, head: prev, badLine: i + 1, reason: 'not valid JSON', tornTail: false };
    }
    if (rec.prev !== prev) return { ok: false, records: i, head: prev, badLine: i + 1, reason: 'prev hash does not match the previous line (edited, reordered or removed lines)', tornTail: false };
    if (rec.seq !== i + 1) return { ok: false, records: i, head: prev, badLine: i + 1, reason: `seq ${rec.seq} where ${i + 1} was expected`, tornTail: false };
    prev = sha256(line);
  }
  return { ok: true, records: parts.length, head: prev, tornTail: tail.length > 0 };
}
