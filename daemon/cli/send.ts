/**
 * `alignd send`: push feedback events from a JSONL file (or stdin) to the daemon's HTTP endpoint
 * or straight to Kafka. Lines are sent in NDJSON batches; refused lines are reported with their
 * line numbers and reasons, and the command exits non-zero if any line was refused.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { AligndError } from '../base/errors.js';

export interface SendResult { sent: number; stored: number; duplicates: number; rejected: Array<{ line: number; code: string; reason: string }> }

export async function* readLines(file: string | undefined): AsyncGenerator<{ line: number; text: string }> {
  const input = file === undefined || file === '-' ? process.stdin : createReadStream(file);
  const rl = createInterface({ input, crlfDelay: Infinity });
  let line = 0;
  for await (const text of rl) {
    line++;
    if (text.trim() !== '') yield { line, text };
  }
}

/** POST lines to `${url}/v1/feedback` as NDJSON batches of `batchSize`. */
export async function sendHttp(url: string, lines: AsyncIterable<{ line: number; text: string }>, batchSize = 500): Promise<SendResult> {
  const result: SendResult = { sent: 0, stored: 0, duplicates: 0, rejected: [] };
  let batch: Array<{ line: number; text: string }> = [];
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const body = batch.map((b) => b.text).join('\n') + '\n';
    let res: Response;
    try {
      res = await fetch(new URL('/v1/feedback', url), { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body });
    } catch (err) {
      throw new AligndError('SOURCE_FAILED', `cannot reach ${url}: ${(err as Error).message}`, { action: 'start the daemon (alignd start) or pass --http URL' });
    }
    const answer = (await res.json().catch(() => ({}))) as { stored?: number; duplicates?: number; rejected?: Array<{ line: number; code: string; reason: string }>; error?: string };
    if (res.status !== 202 && res.status !== 400) {
      throw new AligndError('SOURCE_FAILED', `${url} answered ${res.status}: ${answer.error ?? ''}`, { action: 'nothing of this batch is guaranteed stored; retry the send (ids make it idempotent)' });
    }
    result.sent += batch.length;
    result.stored += answer.stored ?? 0;
    result.duplicates += answer.duplicates ?? 0;
    for (const r of answer.rejected ?? []) result.rejected.push({ ...r, line: (batch[r.line - 1] as { line: number }).line });
    batch = [];
  };
  for await (const l of lines) {
    batch.push(l);
    if (batch.length >= batchSize) await flush();
  }
  await flush();
  return result;
}
