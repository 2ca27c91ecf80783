/**
 * The Kafka feedback source (kafkajs).
 *
 * Per fetched batch (one topic-partition):
 *   1. hand the messages to `sink.ingestInSlices`; when it resolves the stored events are durable in
 *      SQLite (inserts are idempotent by event_id; a big batch is stored in slices, the loop free between);
 *   2. keep every refused message: on the dead-letter topic with its original bytes and headers plus
 *      `alignd-dlq-*` headers (acks=-1), or, when that topic cannot take it, in the buffer's local
 *      dead letters (kafka-dlq.ts: a refusal never holds its partition);
 *   3. only then resolve the batch's last offset and commit it.
 * If 1 or 2 fails nothing is committed: kafkajs re-fetches from the last resolved offset, so the batch
 * is delivered again (a replay stores nothing twice; a refused message may reach the DLQ twice).
 *
 * Broker restarts are ridden out by kafkajs' reconnect and retry; if kafkajs gives up (a crash it
 * will not restart) the consumer is rebuilt here. The dead-letter writer (kafka-dlq.ts) and
 * backpressure (kafka-backpressure.ts) are parts of their own; this file is the consumer.
 */
import { Kafka, type Consumer, type EachBatchPayload } from 'kafkajs';
import { AligndError, errorMessage } from '../../daemon/base/errors.js';
import { zeroRejectCounts, type FeedbackSink, type FeedbackSource, type IngestOutcome, type RawFeedback, type RejectCode } from '../../daemon/feedback/sink.js';
import { createLogger, type Logger } from '../../daemon/base/log.js';
import { dlqTopicFor, kafkaSourceConfigSchema, type KafkaSourceConfig, type KafkaSourceConfigInput } from '../../daemon/ingest/kafka-source-config.js';
import { createBackpressure } from './kafka-backpressure.js';
import { kafkaClientConfig } from './kafka-client.js';
import { createDlqWriter, headersToStrings, type Refusal } from './kafka-dlq.js';

export interface KafkaSourceCounters {
  /** Messages handed to the sink. */
  consumed: number;
  stored: number;
  duplicates: number;
  /** Messages sent to the dead-letter topic, by reject code. */
  dlq: Record<RejectCode, number>;
  /** Of those, sent with the value cut to fit the topic (kept whole in the buffer's dead letters). */
  dlqTruncated: number;
  /** Refusals the dead-letter topic could not take, kept in the buffer's dead letters instead. */
  deadLetteredLocally: number;
  /** Failures (store, DLQ produce, commit, consumer crash); each is logged. */
  errors: number;
  batches: number;
  /** Batches whose offsets were committed. */
  commits: number;
  pauses: number;
  resumes: number;
  /** Consumer rebuilds after kafkajs gave up. */
  restarts: number;
  paused: boolean;
}

export interface BatchCommitted {
  topic: string;
  partition: number;
  messages: number;
  /** From the batch's arrival in eachBatch to its offsets being committed. */
  ms: number;
}

export interface KafkaSourceOptions {
  log?: Logger;
  /** Called after each batch's offsets are committed (telemetry, benchmarks). */
  onBatchCommitted?: (info: BatchCommitted) => void;
  /** Called when the consumer has joined its group (start, rebalance, restart). */
  onGroupJoin?: () => void;
}

export interface PartitionLag { topic: string; partition: number; lag: number }

export type KafkaSource = FeedbackSource & {
  readonly counters: KafkaSourceCounters;
  readonly config: KafkaSourceConfig;
  /**
   * Consumer lag per assigned topic-partition: messages between the last committed offset and the
   * partition's high watermark as of the last fetch (no broker round trip; empty before the first batch).
   */
  lag(): PartitionLag[];
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function createKafkaSource(input: KafkaSourceConfigInput, opts: KafkaSourceOptions = {}): KafkaSource {
  const parsed = kafkaSourceConfigSchema.safeParse(input);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new AligndError('CONFIG_INVALID', `Kafka source config is invalid: ${first?.path.join('.') ?? ''}: ${first?.message ?? parsed.error.message}`,
      { input: 'sources.kafka', action: 'fix the sources.kafka block of the config' });
  }
  const config = parsed.data;
  const log = (opts.log ?? createLogger()).child({ component: 'kafka-source', groupId: config.groupId });
  const kafka = new Kafka(kafkaClientConfig(config, log));
  const counters: KafkaSourceCounters = {
    consumed: 0, stored: 0, duplicates: 0, errors: 0, batches: 0, commits: 0, pauses: 0, resumes: 0, restarts: 0, paused: false,
    dlq: zeroRejectCounts(), dlqTruncated: 0, deadLetteredLocally: 0,
  };

  let sink: FeedbackSink | undefined;
  let consumer: Consumer | undefined;
  let stopping = false;
  let rebuilding: Promise<void> | undefined;
  const lagByPartition = new Map<string, PartitionLag>();

  const countError = (msg: string, err: unknown, fields: Record<string, unknown> = {}): void => {
    counters.errors++;
    log.error(msg, { ...fields, err: errorMessage(err) });
  };
  const dlq = createDlqWriter({ kafka, config, log, counters });
  const backpressure = createBackpressure({ config, log, counters, current: (c) => !stopping && consumer === c, countError });

  async function handleBatch(p: EachBatchPayload): Promise<void> {
    const { batch } = p;
    if (batch.messages.length === 0 || p.isStale()) return;
    const s = sink!;
    const c = consumer!;
    const t0 = performance.now();
    const where = { topic: batch.topic, partition: batch.partition, firstOffset: batch.firstOffset(), lastOffset: batch.lastOffset() };
    counters.batches++;
    const raws: RawFeedback[] = batch.messages.map((m) => {
      const headers = headersToStrings(m.headers);
      const raw: RawFeedback = {
        bytes: m.value ?? Buffer.alloc(0),
        origin: { source: 'kafka', topic: batch.topic, partition: batch.partition, offset: m.offset },
      };
      if (m.key !== null && m.key !== undefined) raw.key = m.key.toString('utf8');
      if (headers !== undefined) raw.headers = headers;
      return raw;
    });

    let outcomes: IngestOutcome[];
    try {
      outcomes = await s.ingestInSlices(raws);
    } catch (err) {
      countError('storing a Kafka batch failed; it is not committed and will be delivered again', err, where);
      throw new AligndError('STORE_FAILED', `storing ${raws.length} messages from ${batch.topic}[${batch.partition}] failed`,
        { input: `${batch.topic}[${batch.partition}]@${where.firstOffset}`, action: 'check the buffer database (disk space, permissions); the batch is retried', cause: err });
    }
    counters.consumed += raws.length;

    const rejected: Refusal[] = [];
    outcomes.forEach((o, i) => {
      if (o.status === 'stored') counters.stored++;
      else if (o.status === 'duplicate') counters.duplicates++;
      else rejected.push({ i, o });
    });

    if (rejected.length > 0) {
      try {
        await dlq.send(batch, rejected, (r) => s.deadLetter(raws[r.i]!, r.o));
      } catch (err) {
        countError('sending refused messages to the dead-letter topic failed; the batch is not committed and will be delivered again',
          err, { ...where, dlqTopic: dlqTopicFor(config, batch.topic), refused: rejected.length });
        throw err;
      }
    }

    const last = batch.messages[batch.messages.length - 1]!;
    p.resolveOffset(last.offset);
    try {
      await p.commitOffsetsIfNecessary(); // autoCommitThreshold 1: commits now
    } catch (err) {
      countError('committing offsets failed; the batch will be delivered again (stored events are deduplicated)', err, where);
      throw err;
    }
    counters.commits++;
    lagByPartition.set(`${batch.topic}\u0000${batch.partition}`, { topic: batch.topic, partition: batch.partition,
      lag: Math.max(0, Number(batch.highWatermark) - (Number(last.offset) + 1)) });
    opts.onBatchCommitted?.({ topic: batch.topic, partition: batch.partition, messages: raws.length, ms: performance.now() - t0 });
    await p.heartbeat();
    backpressure.check(c, s);
  }

  async function startConsumer(): Promise<void> {
    const c = kafka.consumer({
      groupId: config.groupId,
      sessionTimeout: config.sessionTimeout,
      rebalanceTimeout: config.rebalanceTimeout,
      heartbeatInterval: config.heartbeatInterval,
      maxBytes: config.maxBytes,
      maxBytesPerPartition: config.maxBytesPerPartition,
      minBytes: config.minBytes,
      maxWaitTimeInMs: config.maxWaitTimeInMs,
      retry: { ...config.retry, restartOnFailure: async () => true },
    });
    consumer = c;
    c.on(c.events.GROUP_JOIN, () => {
      // a kafkajs restart builds a new consumer group, which forgets paused topics: pause again
      if (counters.paused) c.pause(backpressure.topics());
      lagByPartition.clear(); // the assignment may have changed
      opts.onGroupJoin?.();
    });
    c.on(c.events.CRASH, ({ payload }) => {
      countError('Kafka consumer crashed', payload.error, { restartByKafkajs: payload.restart });
      if (!payload.restart && !stopping && consumer === c) void rebuild(c);
    });
    await c.connect();
    for (const topic of config.topics) await c.subscribe({ topic, fromBeginning: config.fromBeginning });
    await c.run({
      autoCommit: true,
      autoCommitThreshold: 1,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: config.partitionsConsumedConcurrently,
      eachBatch: handleBatch,
    });
    counters.paused = false;
  }

  /** kafkajs will not restart this consumer: build a new one, with backoff, until it runs or we stop. */
  function rebuild(old: Consumer): Promise<void> {
    if (rebuilding !== undefined) return rebuilding;
    rebuilding = (async () => {
      backpressure.cancel();
      await old.disconnect().catch((err: unknown) => countError('disconnecting the crashed consumer failed', err));
      let delay = config.retry.initialRetryTime;
      while (!stopping) {
        await sleep(delay);
        if (stopping) break;
        counters.restarts++;
        try {
          await startConsumer();
          log.info('Kafka consumer rebuilt after a crash', { restarts: counters.restarts });
          break;
        } catch (err) {
          countError('rebuilding the Kafka consumer failed; retrying', err, { retryInMs: delay });
          await consumer?.disconnect().catch(() => {});
          delay = Math.min(delay * 2, config.retry.maxRetryTime);
        }
      }
    })().finally(() => { rebuilding = undefined; });
    return rebuilding;
  }

  return {
    name: 'kafka',
    counters,
    config,
    lag: () => [...lagByPartition.values()].map((l) => ({ ...l })),
    async start(s: FeedbackSink) {
      if (sink !== undefined) throw new AligndError('INTERNAL', 'Kafka source started twice', { action: 'call start() once; stop() before starting again' });
      sink = s;
      stopping = false;
      try {
        await dlq.start();
        await startConsumer();
        log.info('Kafka source started', { brokers: config.brokers, topics: config.topics });
      } catch (err) {
        countError('starting the Kafka source failed', err, { brokers: config.brokers });
        await consumer?.disconnect().catch(() => {});
        await dlq.stop().catch(() => {});
        sink = undefined;
        throw new AligndError('SOURCE_FAILED', `could not start the Kafka source on ${config.brokers.join(',')}`,
          { input: config.topics.join(','), action: 'check that the brokers are reachable and the credentials/TLS settings are right', cause: err });
      }
    },
    async stop() {
      stopping = true;
      backpressure.cancel();
      await rebuilding;
      // consumer.stop() waits for the batch in hand (which commits its own offsets), then leaves the group.
      try {
        await consumer?.stop();
        await consumer?.disconnect();
      } catch (err) {
        countError('stopping the Kafka consumer failed', err);
      }
      try {
        await dlq.stop();
      } catch (err) {
        countError('disconnecting the dead-letter producer failed', err);
      }
      consumer = undefined;
      sink = undefined;
      log.info('Kafka source stopped', { counters });
    },
  };
}
