/**
 * Poison messages on a real Kafka 3.9 broker: a refused message must never hold its partition.
 * Each case produces a refused message and valid events after it on one partition, and requires
 * the valid ones stored and the committed offset at the partition's end: the refusal is kept on
 * the dead-letter topic (whole, or cut with a pointer to the whole local copy) or, when that
 * topic cannot take it at all, in the buffer's dead letters.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { createKafkaSource } from '../../adapters/sources/kafka.js';
import { DLQ_HEADERS, isPermanentKafkaError } from '../../adapters/sources/kafka-dlq.js';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { silentLogger } from '../../daemon/base/log.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { makeEvent } from '../harness/events.js';
import { createTopics, startBroker } from '../harness/kafka.js';
import { committedEqualsEnd, readTopic, waitFor } from '../kafka/util.js';

const broker = await startBroker();
t.teardown(() => broker.close());
const BROKER_LIMIT = 4 * 1024 * 1024; // the harness broker's message.max.bytes

async function produce(topic: string, messages: Array<{ key: string; value: Buffer | string; headers?: Record<string, string> }>): Promise<void> {
  const producer = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING }).producer();
  await producer.connect();
  try {
    for (const m of messages) await producer.send({ topic, acks: -1, messages: [m] });
  } finally {
    await producer.disconnect();
  }
}

/** Run the source on `topic` until the group's committed offset reaches the end (or time out). */
async function consume(t: Test, topic: string, extra: Record<string, unknown> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-poison-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  t.teardown(() => buffer.close());
  const ingest = createIngest({ buffer, limits: defaultLimits });
  const groupId = `poison-${topic}`;
  const source = createKafkaSource({ brokers: broker.brokers, topics: [topic], groupId, maxWaitTimeInMs: 100,
    retry: { initialRetryTime: 100, maxRetryTime: 500, retries: 1 }, ...extra }, { log: silentLogger });
  await source.start(ingest);
  let last = { committed: {}, end: {} } as Awaited<ReturnType<typeof committedEqualsEnd>>;
  try {
    await waitFor(async () => {
      last = await committedEqualsEnd(broker.brokers, groupId, topic);
      return JSON.stringify(last.committed) === JSON.stringify(last.end);
    }, 60_000, () => `partition stuck: committed ${JSON.stringify(last.committed)}, end ${JSON.stringify(last.end)}, counters ${JSON.stringify(source.counters)}`);
  } finally {
    await source.stop();
  }
  return { buffer, source, committed: last };
}

const valid = (prefix: string) => Array.from({ length: 5 }, (_, i) => makeEvent(i, { event_id: `${prefix}-${i}` }));

t.test('a refused message at the source topic\'s size limit fits the dead-letter topic alignd creates', async (t) => {
  const topic = 'poison-at-limit';
  await createTopics(broker.brokers, [{ topic }]);
  const poison = Buffer.alloc(BROKER_LIMIT - 200, 'x'); // fits the source topic; not with ~300 bytes of alignd-dlq-* headers added
  const good = valid('at-limit');
  await produce(topic, [{ key: 'demo', value: poison, headers: { 'x-origin': 'test' } }, ...good.map((e) => ({ key: 'demo', value: JSON.stringify(e) }))]);
  const { buffer, source } = await consume(t, topic);
  t.equal(buffer.counts().events, good.length, 'the events after the poison message are stored');
  t.equal(source.counters.dlq.oversize, 1);
  const [dl] = await readTopic(broker.brokers, `${topic}.dlq`, 1, 30_000);
  t.equal(dl!.value!.length, poison.length, 'the dead-letter record holds the whole original value');
  t.equal(dl!.headers[DLQ_HEADERS.code], 'oversize');
  t.equal(dl!.headers['x-origin'], 'test', 'original headers kept');
  t.notOk(DLQ_HEADERS.truncated in dl!.headers);
});

t.test('a dead-letter topic with a smaller limit gets the message cut to fit, kept whole locally', async (t) => {
  const topic = 'poison-small-dlq';
  await createTopics(broker.brokers, [{ topic }, { topic: `${topic}.dlq`, config: { 'max.message.bytes': '20000' } }]);
  const poison = Buffer.from('{"not json' + 'y'.repeat(60_000));
  const good = valid('small-dlq');
  await produce(topic, [{ key: 'demo', value: poison }, ...good.map((e) => ({ key: 'demo', value: JSON.stringify(e) }))]);
  const { buffer, source } = await consume(t, topic);
  t.equal(buffer.counts().events, good.length);
  t.equal(source.counters.dlqTruncated, 1);
  const [dl] = await readTopic(broker.brokers, `${topic}.dlq`, 1, 30_000);
  t.ok(dl!.value!.length < 20_000 && dl!.value!.length > 10_000, `the value is cut to fit (${dl!.value!.length} bytes)`);
  t.ok(poison.subarray(0, dl!.value!.length).equals(dl!.value!), 'a prefix of the original');
  t.equal(dl!.headers[DLQ_HEADERS.truncated], String(poison.length), 'the original size');
  t.equal(dl!.headers[DLQ_HEADERS.sha256], createHash('sha256').update(poison).digest('hex'));
  const local = buffer.db.prepare('SELECT id, code, bytes FROM dead_letters').all() as Array<{ id: number; code: string; bytes: Buffer }>;
  t.equal(local.length, 1);
  t.equal(String(local[0]!.id), dl!.headers[DLQ_HEADERS.localId], 'the header points at the local dead letter');
  t.ok(local[0]!.bytes.equals(poison), 'kept whole locally');
});

t.test('many refusals in one batch are sent in chunks under the topic\'s limit', async (t) => {
  const topic = 'poison-many';
  await createTopics(broker.brokers, [{ topic }, { topic: `${topic}.dlq`, config: { 'max.message.bytes': '20000' } }]);
  const bad = Array.from({ length: 40 }, (_, i) => ({ key: 'demo', value: `{"bad": ${i}, "pad": "${'z'.repeat(2000)}"` }));
  const producer = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING }).producer();
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: [...bad, ...valid('many').map((e) => ({ key: 'demo', value: JSON.stringify(e) }))] });
  await producer.disconnect();
  const { buffer, source } = await consume(t, topic);
  t.equal(buffer.counts().events, 5);
  t.equal(source.counters.dlq.not_json, 40, 'every refusal reached the dead-letter topic');
  t.equal(source.counters.dlqTruncated, 0);
  t.equal(source.counters.deadLetteredLocally, 0);
});

t.test('a dead-letter topic that can never be written: refusals kept locally, the partition moves on', async (t) => {
  const topic = 'poison-no-dlq';
  await createTopics(broker.brokers, [{ topic }]);
  const good = valid('no-dlq');
  await produce(topic, [...good.slice(0, 2).map((e) => ({ key: 'demo', value: JSON.stringify(e) })), { key: 'demo', value: '{"not": json' },
    ...good.slice(2).map((e) => ({ key: 'demo', value: JSON.stringify(e) }))]);
  // '/' is not allowed in a topic name: every send to it fails at the broker, permanently
  const { buffer, source } = await consume(t, topic, { dlqTopic: 'dead/letters', createDlqTopics: false });
  t.equal(buffer.counts().events, good.length);
  t.equal(source.counters.deadLetteredLocally, 1);
  t.equal(source.counters.dlq.not_json, 0, 'nothing counted as sent to the topic');
  t.ok(source.counters.errors >= 1, 'the failure is counted (and logged)');
  const local = buffer.db.prepare('SELECT code, reason, origin, bytes FROM dead_letters').all() as Array<{ code: string; reason: string; origin: string; bytes: Buffer }>;
  t.same(local.map((r) => [r.code, r.bytes.toString()]), [['not_json', '{"not": json']]);
  t.match(JSON.parse(local[0]!.origin), { source: 'kafka', topic, partition: 0, offset: '2' }, 'where it came from');
});

t.test('which send failures are permanent', async (t) => {
  const protocol = (retriable: boolean) => Object.assign(new Error('x'), { name: 'KafkaJSProtocolError', retriable });
  t.equal(isPermanentKafkaError(Object.assign(new Error('wrapped'), { name: 'KafkaJSNonRetriableError', retriable: false, cause: protocol(false) })), true, 'INVALID_TOPIC / MESSAGE_TOO_LARGE');
  t.equal(isPermanentKafkaError(Object.assign(new Error('retries'), { name: 'KafkaJSNumberOfRetriesExceeded', retriable: false, cause: protocol(true) })), false, 'retries of a retriable error ran out');
  t.equal(isPermanentKafkaError(Object.assign(new Error('conn'), { name: 'KafkaJSConnectionError', retriable: true })), false);
  t.equal(isPermanentKafkaError(new Error('plain')), false);
});
