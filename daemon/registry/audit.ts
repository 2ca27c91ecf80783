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
import { existsSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { AligndError } from '../base/errors.js';
import { appendLineDurable, lastCompleteLine } from '../base/fs-durable.js';
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

/** Append one record (under the registry's lock); returns it as written. */
export function appendAudit(path: string, event: string, fields: Record<string, unknown> = {}): Promise<AuditRecord> {
  return withLock(`${path}.lock`, () => {
    let prev = GENESIS;
    let seq = 1;
    let torn: number | undefined;
    if (existsSync(path)) {
      const last = lastCompleteLine(path);
      // A torn final line is cut off by the append below; this record says how many bytes went.
      if (last.completeBytes < last.size) torn = last.size - last.completeBytes;
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
    appendLineDurable(path, JSON.stringify(record));
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
