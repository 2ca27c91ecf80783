/**
 * The Kafka source's config and start-up failures (no broker needed: an unreachable address is real
 * enough to fail against).
 */
import t from 'tap';
import { createKafkaSource } from '../../adapters/sources/kafka.js';
import { dlqTopicFor, kafkaSourceConfigSchema } from '../../daemon/ingest/kafka-source-config.js';
import { AligndError } from '../../daemon/base/errors.js';
import { silentLogger } from '../../daemon/base/log.js';
import { freePort } from '../harness/kafka.js';

function caught(fn: () => unknown): Error | undefined {
  try { fn(); return undefined; } catch (e) { return e as Error; }
}

t.test('defaults and the DLQ topic name', async (t) => {
  const c = kafkaSourceConfigSchema.parse({ brokers: ['k:9092'], topics: ['feedback'] });
  t.equal(c.groupId, 'alignd-ingest');
  t.equal(c.fromBeginning, true, 'a new group starts from the beginning: nothing produced before the first start is lost');
  t.ok(c.resumeBelow < c.pauseAbove);
  t.equal(dlqTopicFor(c, 'feedback'), 'feedback.dlq');
  t.equal(dlqTopicFor({ ...c, dlqTopic: 'all-bad' }, 'feedback'), 'all-bad');
  const tls = kafkaSourceConfigSchema.parse({ brokers: ['k:9093'], topics: ['f'], ssl: { ca: 'PEM' },
    sasl: { mechanism: 'scram-sha-512', username: 'u', password: 'p' } });
  t.same(tls.sasl, { mechanism: 'scram-sha-512', username: 'u', password: 'p' }, 'SASL options pass through');
  t.same(tls.ssl, { ca: 'PEM' }, 'TLS options pass through');
});

t.test('an invalid config is refused with the field named', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ brokers: [], topics: ['f'] }, /brokers/],
    [{ brokers: ['k:1'], topics: [] }, /topics/],
    [{ brokers: ['k:1'], topics: ['f'], pauseAbove: 10, resumeBelow: 20 }, /resumeBelow/],
    [{ brokers: ['k:1'], topics: ['f'], maxBytes: -1 }, /maxBytes/],
    [{ brokers: ['k:1'], topics: ['f'], grupId: 'typo' }, /grupId|unrecognized/i],
  ];
  for (const [input, re] of cases) {
    const err = caught(() => createKafkaSource(input as never, { log: silentLogger }));
    t.ok(err instanceof AligndError && err.code === 'CONFIG_INVALID', `refused: ${JSON.stringify(input)}`);
    t.match(err?.message, re, 'names the field');
    t.match(err?.message, /sources\.kafka/, 'names the config block');
  }
});

t.test('start against an unreachable broker fails with a clear error', async (t) => {
  const port = await freePort(); // nothing listens there
  const source = createKafkaSource({ brokers: [`127.0.0.1:${port}`], topics: ['f'], connectionTimeout: 500,
    retry: { retries: 1, initialRetryTime: 100, maxRetryTime: 200 } }, { log: silentLogger });
  const sink = { ingestBatch: () => [], ingestInSlices: async () => [], deadLetter: () => 0, pending: () => 0 };
  const err = await source.start(sink).then(() => undefined, (e: unknown) => e as Error);
  t.ok(err instanceof AligndError && err.code === 'SOURCE_FAILED', 'SOURCE_FAILED');
  t.match(err?.message, `127.0.0.1:${port}`, 'names the brokers');
  t.match(err?.message, /reachable/, 'says what to check');
  t.ok(source.counters.errors >= 1, 'the failure is counted');
  await source.stop(); // stopping a source that never started is harmless
});
