/**
 * The dead-letter writer of the Kafka source: refused messages go to the dead-letter topic with
 * the ORIGINAL key, value and headers, plus headers naming why and where from, so an operator can
 * fix and replay the message as it was. The writer creates missing dead-letter topics at start and
 * sends with acks=-1; the consumer commits a batch only after its refusals are acknowledged.
 */
import type { Batch, IHeaders, Kafka, Message, Producer } from 'kafkajs';
import { AligndError, errorMessage } from '../../daemon/base/errors.js';
import type { Logger } from '../../daemon/base/log.js';
import type { IngestOutcome, RejectCode } from '../../daemon/feedback/sink.js';
import { dlqTopicFor, type KafkaSourceConfig } from '../../daemon/ingest/kafka-source-config.js';

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

export type Refusal = { i: number; o: Extract<IngestOutcome, { status: 'rejected' }> };

export interface DlqWriter {
  /** Create missing dead-letter topics (when configured) and connect the producer. */
  start(): Promise<void>;
  /** Send a batch's refused messages; resolves once the broker acknowledged them all. */
  send(batch: Batch, rejected: Refusal[]): Promise<void>;
  stop(): Promise<void>;
}

export function createDlqWriter(opts: {
  kafka: Kafka;
  config: KafkaSourceConfig;
  log: Logger;
  /** Messages dead-lettered, by reject code. */
  counts: Record<RejectCode, number>;
  /** A failure that is only logged (the topics may exist under another ACL). */
  countError: () => void;
}): DlqWriter {
  const { kafka, config, log } = opts;
  let producer: Producer | undefined;

  async function ensureDlqTopics(): Promise<void> {
    if (!config.createDlqTopics) return;
    const wanted = [...new Set(config.topics.map((t) => dlqTopicFor(config, t)))];
    const admin = kafka.admin();
    try {
      await admin.connect();
      const existing = new Set(await admin.listTopics());
      const missing = wanted.filter((t) => !existing.has(t));
      if (missing.length > 0) {
        await admin.createTopics({ waitForLeaders: true, topics: missing.map((topic) => ({ topic })) });
        log.info('created dead-letter topics', { topics: missing });
      }
    } catch (err) {
      // Not fatal: the topics may exist under another ACL, or the broker auto-creates them.
      opts.countError();
      log.warn('could not check/create dead-letter topics; make sure they exist', { topics: wanted, err: errorMessage(err) });
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }

  return {
    async start() {
      await ensureDlqTopics();
      // Not idempotent: the DLQ is at-least-once anyway (a redelivered batch re-sends its refusals),
      // and kafkajs' idempotent producer wants unbounded retries, which would hide a dead broker.
      producer = kafka.producer({ maxInFlightRequests: 1, allowAutoTopicCreation: true });
      await producer.connect();
    },
    async send(batch, rejected) {
      const dlqTopic = dlqTopicFor(config, batch.topic);
      const messages = rejected.map(({ i, o }) => {
        const m = batch.messages[i]!;
        return dlqMessage({ topic: batch.topic, partition: batch.partition, offset: m.offset, key: m.key, value: m.value,
          ...(m.headers === undefined ? {} : { headers: m.headers }) }, o);
      });
      if (producer === undefined) throw new AligndError('SOURCE_FAILED', 'dead-letter producer is not connected', { input: dlqTopic });
      await producer.send({ topic: dlqTopic, acks: -1, messages });
      for (const { o } of rejected) opts.counts[o.code]++;
    },
    async stop() {
      const p = producer;
      producer = undefined;
      await p?.disconnect();
    },
  };
}
