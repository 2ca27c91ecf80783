/**
 * Configuration of the Kafka feedback source (the `sources.kafka` block of the daemon config).
 * This zod schema is the single source of truth; `ssl` and `sasl` go to kafkajs unchanged.
 */
import { z } from 'zod';

const positiveInt = z.number().int().positive();

export const kafkaSourceConfigSchema = z.strictObject({
  brokers: z.array(z.string().min(1)).min(1).describe('Bootstrap servers, host:port'),
  clientId: z.string().min(1).default('alignd'),
  groupId: z.string().min(1).default('alignd-ingest'),
  topics: z.array(z.string().min(1)).min(1).describe('Feedback topics; message key = model'),
  /** One dead-letter topic for every source topic; unset: `<topic>.dlq` per topic. */
  dlqTopic: z.string().min(1).optional(),
  /** Create missing dead-letter topics at start (needs CreateTopics permission; a refusal is only logged). */
  createDlqTopics: z.boolean().default(true),
  /**
   * Size limit assumed for a dead-letter topic whose `max.message.bytes` cannot be read, and the
   * floor of the limit a created one gets (Kafka's default message.max.bytes).
   */
  dlqMaxMessageBytes: positiveInt.default(1_048_588),
  /** Failed dead-letter sends of one batch (transient errors) before its refusals are kept locally and it is committed. */
  dlqMaxAttempts: positiveInt.default(3),
  /** Where a new consumer group starts: the beginning, so feedback produced before the first start is kept. */
  fromBeginning: z.boolean().default(true),
  /** TLS: `true` or Node tls.ConnectionOptions (ca, cert, key, servername, ...), passed through. */
  ssl: z.union([z.boolean(), z.record(z.string(), z.unknown())]).optional(),
  /** SASL: { mechanism: plain | scram-sha-256 | scram-sha-512 | aws | oauthbearer, ... }, passed through. */
  sasl: z.looseObject({ mechanism: z.string().min(1) }).optional(),
  connectionTimeout: positiveInt.default(3000),
  requestTimeout: positiveInt.default(30000),
  /** A member that stops heartbeating (killed process) leaves the group after this; broker minimum 6000. */
  sessionTimeout: positiveInt.default(30000),
  rebalanceTimeout: positiveInt.default(60000),
  heartbeatInterval: positiveInt.default(3000),
  /** Fetch sizing, bytes. Bigger fetches mean bigger SQLite transactions (fewer fsyncs) but a longer
   * batch → commit latency; bench:ingest measures both with these defaults. */
  maxBytes: positiveInt.default(32 * 1024 * 1024),
  maxBytesPerPartition: positiveInt.default(4 * 1024 * 1024),
  minBytes: positiveInt.default(1),
  maxWaitTimeInMs: positiveInt.default(250),
  partitionsConsumedConcurrently: positiveInt.default(1),
  /** Backpressure: pause when the buffer's pending work is above `pauseAbove`, resume below `resumeBelow`. */
  pauseAbove: positiveInt.default(200_000),
  resumeBelow: positiveInt.default(100_000),
  /** How often a paused source looks at the buffer's pending work again. */
  backpressurePollMs: positiveInt.default(250),
  /** Reconnect/retry of kafkajs (covers a broker restart); the consumer is restarted if kafkajs gives up. */
  retry: z.strictObject({
    initialRetryTime: positiveInt.default(300),
    maxRetryTime: positiveInt.default(10_000),
    retries: z.number().int().min(0).default(10),
  }).default({ initialRetryTime: 300, maxRetryTime: 10_000, retries: 10 }),
}).refine((c) => c.resumeBelow < c.pauseAbove, { message: 'resumeBelow must be below pauseAbove', path: ['resumeBelow'] });

export type KafkaSourceConfig = z.output<typeof kafkaSourceConfigSchema>;
export type KafkaSourceConfigInput = z.input<typeof kafkaSourceConfigSchema>;

/** The dead-letter topic for a source topic. */
export function dlqTopicFor(config: Pick<KafkaSourceConfig, 'dlqTopic'>, topic: string): string {
  return config.dlqTopic ?? `${topic}.dlq`;
}
