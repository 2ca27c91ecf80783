/**
 * The dead-letter writer of the Kafka source: refused messages go to the dead-letter topic with
 * the ORIGINAL key, value and headers, plus headers naming why and where from, so an operator can
 * fix and replay the message as it was. The consumer commits a batch only once each of its
 * refusals is kept: acknowledged by the dead-letter topic (acks=-1), or in the buffer's local
 * dead letters. A refusal must never hold its partition:
 *
 * - Size. A message that fits its source topic grows by the `alignd-dlq-*` headers. A dead-letter
 *   topic alignd creates gets `max.message.bytes` = the largest source topic's limit + 64 KiB; for
 *   an existing one the writer reads its limit. A message still too large goes to the topic with
 *   its value cut to fit (`alignd-dlq-truncated`: original size, `alignd-dlq-sha256` of the
 *   original, `alignd-dlq-local-id`: the local dead letter holding it whole). Sends are chunked so
 *   no record batch exceeds the limit either.
 * - A topic that cannot take it. A permanent refusal (invalid topic, not authorised, too large)
 *   or `dlqMaxAttempts` failed sends of the same batch: the refusals are kept in the buffer's
 *   dead_letters table (original bytes, reason, origin) and the batch is committed.
 */
import { createHash } from 'node:crypto';
import kafkajs, { type Batch, type IHeaders, type Kafka, type Message, type Producer } from 'kafkajs';
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
  truncated: 'alignd-dlq-truncated',
  sha256: 'alignd-dlq-sha256',
  localId: 'alignd-dlq-local-id',
} as const;

/** Room a dead-letter topic alignd creates has above its largest source topic's message limit. */
export const DLQ_HEADROOM_BYTES = 64 * 1024;
/** Per-record-batch bytes the size estimate leaves aside (batch header, varints, slack). */
const BATCH_SLACK_BYTES = 1024;

/** Bytes a message takes in a record batch, from above: key, value, headers, per-record overhead. */
export function recordBytes(m: Message): number {
  const len = (v: unknown): number => (v === null || v === undefined ? 0 : Buffer.isBuffer(v) ? v.length : Buffer.byteLength(String(v)));
  let n = 64 + len(m.key) + len(m.value);
  for (const [k, v] of Object.entries(m.headers ?? {})) {
    for (const one of Array.isArray(v) ? v : [v]) n += 16 + Buffer.byteLength(k) + len(one);
  }
  return n;
}

/**
 * Fit one dead-letter message into `budget` bytes: unchanged when it fits, else the value cut
 * and headers saying so (`localId`: where the whole message is kept). Source headers are dropped
 * too when they alone do not fit.
 */
export function fitMessage(m: Message, budget: number, localId: () => number): { message: Message; truncated: boolean } {
  if (recordBytes(m) <= budget) return { message: m, truncated: false };
  const value = m.value === null || m.value === undefined ? Buffer.alloc(0) : Buffer.isBuffer(m.value) ? m.value : Buffer.from(m.value);
  const own = Object.fromEntries(Object.entries(m.headers ?? {}).filter(([k]) => k.startsWith('alignd-dlq-')));
  const headers: IHeaders = { ...(m.headers ?? {}),
    [DLQ_HEADERS.truncated]: String(value.length), [DLQ_HEADERS.sha256]: createHash('sha256').update(value).digest('hex'), [DLQ_HEADERS.localId]: String(localId()) };
  let out: Message = { key: m.key ?? null, value: Buffer.alloc(0), headers };
  if (recordBytes(out) > budget) out = { ...out, headers: { ...own, [DLQ_HEADERS.truncated]: headers[DLQ_HEADERS.truncated]!, [DLQ_HEADERS.sha256]: headers[DLQ_HEADERS.sha256]!, [DLQ_HEADERS.localId]: headers[DLQ_HEADERS.localId]!, 'alignd-dlq-headers-dropped': 'true' } };
  const room = Math.max(0, budget - recordBytes(out));
  return { message: { ...out, value: value.subarray(0, Math.min(room, value.length)) }, truncated: true };
}

/**
 * A send that can never succeed: a protocol error the broker marks not retriable (invalid topic,
 * not authorised, message too large). Connection failures and exhausted retries of retriable
 * errors are not permanent.
 */
export function isPermanentKafkaError(err: unknown): boolean {
  for (let e = err as { name?: string; retriable?: boolean; cause?: unknown } | undefined, depth = 0; e !== undefined && e !== null && depth < 8; e = e.cause as typeof e, depth++) {
    if (e.name === 'KafkaJSProtocolError') return e.retriable === false;
  }
  return false;
}

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

export interface DlqCounters {
  /** Messages dead-lettered on the topic, by reject code. */
  dlq: Record<RejectCode, number>;
  /** Of those, sent with the value cut to fit (kept whole locally). */
  dlqTruncated: number;
  /** Refusals kept only in the buffer's dead_letters (the topic could not take them). */
  deadLetteredLocally: number;
  errors: number;
}

export interface DlqWriter {
  /** Create missing dead-letter topics (when configured), learn their size limits, connect the producer. */
  start(): Promise<void>;
  /**
   * Keep a batch's refused messages: on the dead-letter topic, or, when it cannot take them,
   * through `keepLocally` (the buffer's dead letters; returns the row id). Resolves once every
   * refusal is kept; throws (the batch is not committed, it comes again) on a transient failure
   * before `dlqMaxAttempts` sends of this batch have failed.
   */
  send(batch: Batch, rejected: Refusal[], keepLocally: (r: Refusal) => number): Promise<void>;
  stop(): Promise<void>;
}

export function createDlqWriter(opts: {
  kafka: Kafka;
  config: KafkaSourceConfig;
  log: Logger;
  counters: DlqCounters;
}): DlqWriter {
  const { kafka, config, log, counters } = opts;
  let producer: Producer | undefined;
  /** max.message.bytes of each dead-letter topic, as created or read. */
  const limits = new Map<string, number>();
  /** Failed sends per batch (topic, partition, first offset). */
  const attempts = new Map<string, number>();

  const topicLimits = async (admin: ReturnType<Kafka['admin']>, topics: string[]): Promise<Map<string, number>> => {
    const out = new Map<string, number>();
    if (topics.length === 0) return out;
    const r = await admin.describeConfigs({ includeSynonyms: false,
      resources: topics.map((name) => ({ type: kafkajs.ConfigResourceTypes.TOPIC, name, configNames: ['max.message.bytes'] })) });
    for (const res of r.resources) {
      const v = Number(res.configEntries.find((c) => c.configName === 'max.message.bytes')?.configValue);
      if (Number.isFinite(v) && v > 0) out.set(res.resourceName, v);
    }
    return out;
  };

  async function prepareTopics(): Promise<void> {
    const wanted = [...new Set(config.topics.map((t) => dlqTopicFor(config, t)))];
    const admin = kafka.admin();
    try {
      await admin.connect();
      const existing = new Set(await admin.listTopics());
      const missing = wanted.filter((t) => !existing.has(t));
      if (config.createDlqTopics && missing.length > 0) {
        const sources = await topicLimits(admin, config.topics.filter((t) => existing.has(t)));
        const size = Math.max(config.dlqMaxMessageBytes, ...sources.values()) + DLQ_HEADROOM_BYTES;
        await admin.createTopics({ waitForLeaders: true, topics: missing.map((topic) => ({ topic, configEntries: [{ name: 'max.message.bytes', value: String(size) }] })) });
        log.info('created dead-letter topics', { topics: missing, maxMessageBytes: size });
      }
      for (const [t, n] of await topicLimits(admin, wanted.filter((t) => existing.has(t) || config.createDlqTopics))) limits.set(t, n);
    } catch (err) {
      // Not fatal: the topics may exist under another ACL, or the broker auto-creates them.
      counters.errors++;
      log.warn('could not check/create dead-letter topics or read their size limits; make sure they exist', { topics: wanted, err: errorMessage(err) });
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }

  /** Send in chunks no record batch of which exceeds the topic's limit. */
  async function sendChunks(topic: string, messages: Message[], budget: number, sent: (n: number) => void): Promise<void> {
    let chunk: Message[] = [];
    let bytes = 0;
    const flush = async (): Promise<void> => {
      if (chunk.length === 0) return;
      if (producer === undefined) throw new AligndError('SOURCE_FAILED', 'dead-letter producer is not connected', { input: topic });
      await producer.send({ topic, acks: -1, messages: chunk });
      sent(chunk.length);
      chunk = [];
      bytes = 0;
    };
    for (const m of messages) {
      const n = recordBytes(m);
      if (bytes + n > budget) await flush();
      chunk.push(m);
      bytes += n;
    }
    await flush();
  }

  return {
    async start() {
      await prepareTopics();
      // Not idempotent: the DLQ is at-least-once anyway (a redelivered batch re-sends its refusals),
      // and kafkajs' idempotent producer wants unbounded retries, which would hide a dead broker.
      producer = kafka.producer({ maxInFlightRequests: 1, allowAutoTopicCreation: true });
      await producer.connect();
    },
    async send(batch, rejected, keepLocally) {
      const dlqTopic = dlqTopicFor(config, batch.topic);
      const key = `${batch.topic}\u0000${batch.partition}\u0000${batch.firstOffset()}`;
      const budget = (limits.get(dlqTopic) ?? config.dlqMaxMessageBytes) - BATCH_SLACK_BYTES;
      const local = new Map<number, number>();
      const messages = rejected.map((r) => {
        const m = batch.messages[r.i]!;
        const full = dlqMessage({ topic: batch.topic, partition: batch.partition, offset: m.offset, key: m.key, value: m.value,
          ...(m.headers === undefined ? {} : { headers: m.headers }) }, r.o);
        const fitted = fitMessage(full, budget, () => {
          const id = keepLocally(r);
          local.set(r.i, id);
          return id;
        });
        if (fitted.truncated) log.warn('refused message too large for the dead-letter topic: sent cut, kept whole locally', { topic: batch.topic, partition: batch.partition, offset: m.offset, bytes: m.value?.length ?? 0, localId: local.get(r.i) });
        return { r, message: fitted.message, truncated: fitted.truncated };
      });
      let done = 0;
      try {
        await sendChunks(dlqTopic, messages.map((x) => x.message), budget, (n) => {
          for (const x of messages.slice(done, done + n)) {
            counters.dlq[x.r.o.code]++;
            if (x.truncated) counters.dlqTruncated++;
          }
          done += n;
        });
        attempts.delete(key);
      } catch (err) {
        const n = (attempts.get(key) ?? 0) + 1;
        const permanent = isPermanentKafkaError(err);
        if (!permanent && n < config.dlqMaxAttempts) {
          attempts.set(key, n);
          throw err;
        }
        attempts.delete(key);
        // The topic cannot take them: keep the rest locally so the partition moves on.
        for (const x of messages.slice(done)) {
          if (!local.has(x.r.i)) keepLocally(x.r);
          counters.deadLetteredLocally++;
        }
        counters.errors++;
        log.error('the dead-letter topic cannot take refused messages: kept in the buffer\'s dead_letters table instead, and the batch is committed',
          { dlqTopic, topic: batch.topic, partition: batch.partition, refused: messages.length - done, attempts: n, permanent, err: errorMessage(err) });
      }
    },
    async stop() {
      const p = producer;
      producer = undefined;
      await p?.disconnect();
    },
  };
}
