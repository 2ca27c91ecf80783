/**
 * Dead-letter records for refused Kafka messages: the ORIGINAL key, value and headers, plus
 * headers naming why and where from, so an operator can fix and replay the message as it was.
 */
import type { IHeaders, Message } from 'kafkajs';
import type { IngestOutcome } from '../../daemon/feedback/sink.js';

export const DLQ_HEADERS = {
  reason: 'alignd-dlq-reason',
  code: 'alignd-dlq-code',
  path: 'alignd-dlq-path',
  eventId: 'alignd-dlq-event-id',
  topic: 'alignd-dlq-topic',
  partition: 'alignd-dlq-partition',
  offset: 'alignd-dlq-offset',
  at: 'alignd-dlq-at',
} as const;

/** Reasons can quote the input; keep the header small. */
const MAX_REASON = 1000;

export interface SourceMessage {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers?: IHeaders;
}

export function dlqMessage(src: SourceMessage, outcome: Extract<IngestOutcome, { status: 'rejected' }>, at: Date = new Date()): Message {
  const headers: IHeaders = { ...(src.headers ?? {}) };
  headers[DLQ_HEADERS.reason] = outcome.reason.length > MAX_REASON ? outcome.reason.slice(0, MAX_REASON) + '…' : outcome.reason;
  headers[DLQ_HEADERS.code] = outcome.code;
  if (outcome.path !== undefined) headers[DLQ_HEADERS.path] = outcome.path;
  if (outcome.eventId !== undefined) headers[DLQ_HEADERS.eventId] = outcome.eventId;
  headers[DLQ_HEADERS.topic] = src.topic;
  headers[DLQ_HEADERS.partition] = String(src.partition);
  headers[DLQ_HEADERS.offset] = src.offset;
  headers[DLQ_HEADERS.at] = at.toISOString();
  return { key: src.key, value: src.value, headers };
}

/** kafkajs headers → plain strings for the sink (first value of a repeated header). */
export function headersToStrings(headers: IHeaders | undefined): Record<string, string> | undefined {
  if (headers === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    const first = Array.isArray(v) ? v[0] : v;
    if (first !== undefined) out[k] = typeof first === 'string' ? first : first.toString('utf8');
  }
  return out;
}
