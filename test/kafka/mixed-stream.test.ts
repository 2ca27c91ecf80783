/**
 * A mixed stream through the real broker, the Kafka source, the ingest pipeline and SQLite:
 * the buffer holds exactly the valid unique events, the dead-letter topic holds every bad message
 * with its original bytes and reason headers, and the committed offsets reach the end offsets.
 * Then backpressure: the source pauses while the buffer's pending work is over its bound and
 * resumes once derivation has worked it off.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { createKafkaSource } from '../../adapters/sources/kafka.js';
import { sendToKafka } from '../../adapters/sources/kafka-send.js';
import { DLQ_HEADERS } from '../../adapters/sources/kafka-dlq.js';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { silentLogger } from '../../daemon/base/log.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { badInputs, makeEvent } from '../harness/events.js';
import { consoleProduce, createTopics, startBroker } from '../harness/kafka.js';
import { committedEqualsEnd, readTopic, waitFor } from './util.js';

const limits = { ...defaultLimits, maxEventBytes: 64 * 1024 };

const broker = await startBroker();
t.teardown(() => broker.close());

t.test('mixed stream: valid stored once, bad dead-lettered with reasons, offsets committed', async (t) => {
  const topic = 'feedback';
  await createTopics(broker.brokers, [{ topic, numPartitions: 3 }]);

  // valid events, 60 of them produced twice, 20 more through Kafka's own console producer
  const valid = Array.from({ length: 300 }, (_, i) => makeEvent(i, { event_id: `mix-${i}`, model: i % 2 ? 'alpha' : 'beta' }));
  const consoleValid = Array.from({ length: 20 }, (_, i) => makeEvent(1000 + i, { event_id: `console-${i}` }));
  await sendToKafka({ brokers: broker.brokers, topic }, valid, { log: silentLogger, chunk: 97 });
  await sendToKafka({ brokers: broker.brokers, topic }, valid.slice(0, 60), { log: silentLogger });
  await consoleProduce(broker.brokers, topic, consoleValid.map((e) => `${e.model}\t${JSON.stringify(e)}`), { withKeys: true });

  // every kind of bad message, with a header that must survive into the DLQ
  const bad = badInputs(limits.maxEventBytes);
  const kafka = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: [
    ...bad.map((b, i) => ({ key: 'demo', value: b.bytes, headers: { 'x-test-bad': b.name, 'x-index': String(i) } })),
    { key: 'demo', value: null, headers: { 'x-test-bad': 'tombstone', 'x-index': 'null' } },
  ] });
  await producer.disconnect();
  const badCount = bad.length + 1;
  const total = valid.length + 60 + consoleValid.length + badCount;

  const dir = mkdtempSync(join(tmpdir(), 'alignd-kafka-mixed-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  t.teardown(() => buffer.close());
  const ingest = createIngest({ buffer, limits });
  const groupId = 'alignd-mixed';
  const source = createKafkaSource({ brokers: broker.brokers, topics: [topic], groupId }, { log: silentLogger });
  await source.start(ingest);
  await waitFor(() => source.counters.consumed >= total, 60_000, () => `consumed ${source.counters.consumed} of ${total}`);
  const lag = source.lag();
  t.ok(lag.length >= 1 && lag.every((l) => l.topic === topic && l.lag === 0), `caught up: lag 0 on every partition seen (${JSON.stringify(lag)})`);
  await source.stop();

  // the buffer: exactly the valid unique events
  const ids = (buffer.db.prepare('SELECT event_id FROM events ORDER BY event_id').all() as { event_id: string }[]).map((r) => r.event_id);
  const expected = [...valid, ...consoleValid].map((e) => e.event_id).sort();
  t.same(ids, expected, 'buffer holds every valid event once');
  t.equal(source.counters.stored, expected.length);
  t.equal(source.counters.duplicates, 60);
  t.equal(source.counters.errors, 0, 'no errors');

  // the DLQ: every bad message, original bytes and headers, reason and code
  const dlq = await readTopic(broker.brokers, `${topic}.dlq`, badCount, 30_000);
  t.equal(dlq.length, badCount, 'every bad message is in the DLQ');
  for (const m of dlq) {
    const h = (k: string): string | undefined => m.headers[k];
    const name = h('x-test-bad');
    t.ok(name, 'original header kept');
    t.ok(h(DLQ_HEADERS.reason)?.length, `${name}: reason header`);
    t.equal(h(DLQ_HEADERS.topic), topic);
    t.match(h(DLQ_HEADERS.partition), /^[0-2]$/);
    t.match(h(DLQ_HEADERS.offset), /^\d+$/);
    t.equal(m.key, 'demo', 'original key kept');
    if (name === 'tombstone') {
      t.equal(m.value, null, 'a null value stays null');
      t.equal(h(DLQ_HEADERS.code), 'not_json');
    } else {
      const b = bad[Number(h('x-index'))]!;
      t.equal(h(DLQ_HEADERS.code), b.code, `${b.name} → ${b.code}`);
      t.ok(m.value !== null && m.value.equals(b.bytes), `${b.name}: original bytes`);
    }
  }
  const dlqByCode: Record<string, number> = {};
  for (const b of [...bad.map((x) => x.code), 'not_json']) dlqByCode[b] = (dlqByCode[b] ?? 0) + 1;
  for (const [code, n] of Object.entries(source.counters.dlq)) t.equal(n, dlqByCode[code] ?? 0, `dlq counter ${code}`);

  // offsets: committed == end on every partition
  const { committed, end } = await committedEqualsEnd(broker.brokers, groupId, topic);
  t.same(committed, end, 'committed offsets equal the end offsets');
});

t.test('backpressure: pause above pauseAbove, resume below resumeBelow', async (t) => {
  const topic = 'backpressure';
  const groupId = 'alignd-backpressure';
  await createTopics(broker.brokers, [{ topic, numPartitions: 1 }]);
  const total = 3000;
  await sendToKafka({ brokers: broker.brokers, topic },
    Array.from({ length: total }, (_, i) => makeEvent(i, { event_id: `bp-${i}` })), { log: silentLogger });

  const dir = mkdtempSync(join(tmpdir(), 'alignd-kafka-bp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  t.teardown(() => buffer.close());
  const ingest = createIngest({ buffer, limits });
  const source = createKafkaSource({
    brokers: broker.brokers, topics: [topic], groupId, pauseAbove: 500, resumeBelow: 100,
    maxBytesPerPartition: 16 * 1024, maxWaitTimeInMs: 100, backpressurePollMs: 50,
  }, { log: silentLogger });
  await source.start(ingest); // derivation is not running: pending work only grows

  await waitFor(() => source.counters.paused, 60_000, () => `never paused; pending ${ingest.pending()}`);
  t.equal(source.counters.pauses, 1, 'paused once');
  await new Promise((r) => setTimeout(r, 1500));
  t.ok(source.counters.consumed < total, `consumption held while paused (${source.counters.consumed} of ${total})`);
  t.ok(ingest.pending() > 500, 'pending work is over the bound');

  ingest.startDeriving();
  t.teardown(() => ingest.stopDeriving());
  await waitFor(() => source.counters.stored === total, 60_000,
    () => `stored ${source.counters.stored} of ${total}; counters ${JSON.stringify(source.counters)}`);
  t.ok(source.counters.resumes >= 1, 'resumed after derivation worked the backlog off');
  t.equal(source.counters.pauses, source.counters.resumes + (source.counters.paused ? 1 : 0), 'every pause but the current one was resumed');
  await source.stop();
  const { committed, end } = await committedEqualsEnd(broker.brokers, groupId, topic);
  t.same(committed, end, 'all committed');
});
