/**
 * The append-only audit log: JSON lines, each carrying `seq` and `prev`, the link to the previous
 * line's bytes (the first line's `prev` is 64 zeros). Editing, reordering or deleting a line in the
 * middle breaks the chain and `verifyAudit` names the first bad line.
 *
 * Keyed chain. With a key (ALIGND_AUDIT_KEY) every link is `hmac-sha256:<HMAC-SHA256(key, line)>`
 * (RFC 2104), so whoever can write the file but does not hold the key cannot rewrite records and
 * recompute the links; without one the links are plain sha256 hex and status says the chain is
 * not keyed. A log started without a key may continue keyed; a plain link after a keyed one is a
 * downgrade and fails verification.
 *
 * Truncation. Dropping the tail leaves a valid chain, so the head (the link the next record will
 * carry, with its seq) is published — in status and with every promotion announcement — and a
 * reader who kept an earlier head checks it (`verifyAudit(path, { expect })`).
 *
 * A crash in the middle of an append can leave a final line without its newline; that torn tail
 * was never acknowledged, so the next append cuts it off (and says so in its own record), and
 * verification reports it rather than calling it tampering.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createHash, createHmac } from 'node:crypto';
import { AligndError } from '../base/errors.js';
import { redactSecrets } from '../base/redact.js';
import { appendLineDurable, lastCompleteLine } from '../base/fs-durable.js';
import { withLock } from './lock.js';

export const GENESIS = '0'.repeat(64);
const KEYED = 'hmac-sha256:';

export interface AuditRecord {
  seq: number;
  ts: string;
  prev: string;
  /** What happened: `version.create`, `gate.decision`, `promote.done`, `policy.applied`, ... */
  event: string;
  [field: string]: unknown;
}

/** The chain's head: the link the record after `seq` carries (GENESIS for an empty log). */
export interface AuditHead { seq: number; head: string; keyed: boolean }

export interface AuditVerification {
  ok: boolean;
  records: number;
  /** The link the next record will carry (GENESIS when empty): plain sha256 hex, or `hmac-sha256:<hex>`. */
  head: string;
  /** Every link is an HMAC (false: some or all links are plain hashes). */
  keyed: boolean;
  /** 1-based line number and reason of the first break in the chain. */
  badLine?: number;
  reason?: string;
  /** An incomplete final line from an interrupted append (not counted as tampering). */
  tornTail: boolean;
}

/** The audit key from the environment (ALIGND_AUDIT_KEY); undefined when unset or empty. */
export function auditKeyFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const k = env['ALIGND_AUDIT_KEY'];
  return k === undefined || k === '' ? undefined : k;
}

/** The link to `line`: HMAC-SHA256 with the key, else sha256. */
export function linkTo(line: string | Buffer, key: string | undefined): string {
  return key === undefined ? createHash('sha256').update(line).digest('hex') : KEYED + createHmac('sha256', key).update(line).digest('hex');
}

const badLog = (path: string, line: number, what: string): AligndError => new AligndError('STORE_FAILED', `audit log ${path}, line ${line}: ${what}`, {
  input: `${path}:${line}`, action: 'run `alignd registry verify MODEL`; restore the log from backup (the registry refuses new audit records until the log is sound)' });

/** Append one record (under the registry's lock); returns it as written. */
export function appendAudit(path: string, event: string, fields: Record<string, unknown> = {}, key?: string): Promise<AuditRecord> {
  return withLock(`${path}.lock`, () => {
    let prev = GENESIS;
    let seq = 1;
    let torn: number | undefined;
    if (existsSync(path)) {
      const last = lastCompleteLine(path);
      // A torn final line is cut off by the append below; this record says how many bytes went.
      if (last.completeBytes < last.size) torn = last.size - last.completeBytes;
      if (last.line !== undefined) {
        let lastRec: Partial<AuditRecord> | undefined;
        try {
          lastRec = JSON.parse(last.line) as Partial<AuditRecord>;
        } catch { /* reported below */ }
        if (typeof lastRec?.seq !== 'number') {
          // Fail closed: nothing more is recorded (or done) until a person looks at the log.
          throw new AligndError('STORE_FAILED', `the last line of the audit log ${path} is not an audit record`, { input: path, action: 'run `alignd registry verify MODEL`; restore the log from backup' });
        }
        if (key === undefined && typeof lastRec.prev === 'string' && lastRec.prev.startsWith(KEYED)) {
          throw new AligndError('STORE_FAILED', `the audit log ${path} is keyed (HMAC) and ALIGND_AUDIT_KEY is not set: a plain record would break the chain`, {
            input: path, action: 'set ALIGND_AUDIT_KEY to the key the daemon uses' });
        }
        prev = linkTo(last.line, key);
        seq = lastRec.seq + 1;
      }
    }
    const record: AuditRecord = { seq, ts: new Date().toISOString(), prev, event, ...fields, ...(torn === undefined ? {} : { tornTailBytesDropped: torn }) };
    // Secrets in URLs (a target's credentials in an error) never reach the log; the link covers the line as written.
    const line = redactSecrets(JSON.stringify(record));
    appendLineDurable(path, line);
    return JSON.parse(line) as AuditRecord;
  });
}

/** Every complete record; a line that is not JSON is an error naming the file and the line. */
export function readAudit(path: string): AuditRecord[] {
  if (!existsSync(path)) return [];
  const lines = readFileSync(path, 'utf8').split('\n');
  lines.pop(); // after the final newline, or a torn tail
  return lines.map((l, i) => {
    try {
      return JSON.parse(l) as AuditRecord;
    } catch (err) {
      throw badLog(path, i + 1, `not valid JSON (${(err as Error).message})`);
    }
  });
}

/** Does the log end with a keyed link (its last record's prev is an HMAC)? False for an empty or one-record log. */
export function endsKeyed(path: string): boolean {
  if (!existsSync(path)) return false;
  const last = lastCompleteLine(path).line;
  try {
    return last !== undefined && String((JSON.parse(last) as AuditRecord).prev).startsWith(KEYED);
  } catch {
    return false;
  }
}

/** The head as of now: the last complete line's seq and the link to it (no verification of the chain). */
export function auditHead(path: string, key?: string): AuditHead {
  if (!existsSync(path)) return { seq: 0, head: GENESIS, keyed: key !== undefined };
  const last = lastCompleteLine(path);
  if (last.line === undefined) return { seq: 0, head: GENESIS, keyed: key !== undefined };
  let seq = 0;
  try {
    seq = (JSON.parse(last.line) as AuditRecord).seq;
  } catch { /* a corrupt last line: seq 0; verification says where */ }
  return { seq, head: linkTo(last.line, key), keyed: key !== undefined };
}

/**
 * Check the chain. With `key`, HMAC links are checked (without it a keyed log cannot be verified
 * and is reported so); `expect` is a head published earlier: the log must still reach it.
 */
export function verifyAudit(path: string, opts: { key?: string; expect?: { seq: number; head: string } } = {}): AuditVerification {
  const { key, expect } = opts;
  if (!existsSync(path)) {
    const truncated = expect !== undefined && expect.seq > 0;
    return { ok: !truncated, records: 0, head: GENESIS, keyed: false, tornTail: false, ...(truncated ? { reason: `the log is empty, but a head was published at seq ${expect.seq}: truncated` } : {}) };
  }
  const parts = readFileSync(path, 'utf8').split('\n');
  const tail = parts.pop() ?? '';
  let prevLine: string | undefined;
  let sawKeyed = false;
  let allKeyed = true;
  // The head: the link the next record appended (with `key`, or plain without) will carry.
  const headNow = (): string => (prevLine === undefined ? GENESIS : linkTo(prevLine, key));
  const fail = (i: number, records: number, reason: string): AuditVerification =>
    ({ ok: false, records, head: headNow(), keyed: false, badLine: i + 1, reason, tornTail: false });
  for (let i = 0; i < parts.length; i++) {
    const line = parts[i] as string;
    let rec: AuditRecord;
    try {
      rec = JSON.parse(line) as AuditRecord;
    } catch {
      return fail(i, i, 'not valid JSON');
    }
    if (typeof rec.prev !== 'string') return fail(i, i, 'no prev link');
    const keyed = rec.prev.startsWith(KEYED);
    if (i === 0) {
      // The first record links to nothing (GENESIS): it says nothing about keying.
    } else if (keyed) {
      sawKeyed = true;
      if (key === undefined) return fail(i, i, 'the chain is keyed (HMAC-SHA256): set ALIGND_AUDIT_KEY to verify it');
    } else {
      allKeyed = false;
      if (sawKeyed) return fail(i, i, 'a plain sha256 link after keyed ones: the log was rewritten without the key');
    }
    const want = prevLine === undefined ? GENESIS : linkTo(prevLine, keyed ? key : undefined);
    if (rec.prev !== want) {
      return fail(i, i, keyed ? 'prev HMAC does not match the previous line (edited, reordered or removed lines, or another key)'
        : 'prev hash does not match the previous line (edited, reordered or removed lines)');
    }
    if (rec.seq !== i + 1) return fail(i, i, `seq ${rec.seq} where ${i + 1} was expected`);
    if (expect !== undefined && i + 1 === expect.seq + 1 && rec.prev !== expect.head) return fail(i, i, `record ${i + 1} does not continue the head published at seq ${expect.seq}`);
    prevLine = line;
  }
  const head = headNow();
  const keyedToEnd = parts.length > 1 && sawKeyed && allKeyed;
  if (key !== undefined && parts.length > 1 && !(JSON.parse(parts.at(-1) as string) as AuditRecord).prev.startsWith(KEYED)) {
    // Whoever holds no key can rewrite the whole log with plain links; with the key, the log must
    // end keyed (the daemon appends a keyed record as soon as it runs with a key: audit.keyed).
    return { ok: false, records: parts.length, head, keyed: false, badLine: parts.length, tornTail: tail.length > 0,
      reason: 'the chain does not end keyed although a key is set: rewritten without the key, or not written since the key was set (start the daemon once)' };
  }
  if (expect !== undefined && expect.seq > parts.length) {
    return { ok: false, records: parts.length, head, keyed: keyedToEnd, tornTail: tail.length > 0,
      reason: `the log has ${parts.length} records, but a head was published at seq ${expect.seq}: truncated` };
  }
  if (expect !== undefined && expect.seq === parts.length && expect.seq > 0 && head !== expect.head) {
    return { ok: false, records: parts.length, head, keyed: keyedToEnd, tornTail: tail.length > 0,
      reason: `the last record is not the one whose head was published at seq ${expect.seq}` };
  }
  return { ok: true, records: parts.length, head, keyed: keyedToEnd, tornTail: tail.length > 0 };
}
