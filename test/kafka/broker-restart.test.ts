/**
 * Failures around the source:
 * - the broker goes away mid-stream (once gracefully, once killed) and comes back on the same port
 *   and data; the Kafka source rides it out and, once the producer is done, every produced event is
 *   in the buffer and the committed offsets reach the end;
 * - the buffer's disk is full (SQLite max_page_count): nothing is committed while the store fails,
 *   and once there is room again the same messages are delivered again and stored.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { createKafkaSource } from '../../adapters/sources/kafka.js';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { silentLogger } from '../../daemon/base/log.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { makeEvent } from '../harness/events.js';
import { createTopics, startBroker } from '../harness/kafka.js';
import { committedEqualsEnd, sleep, waitFor } from './util.js';

const broker = await startBroker();
t.teardown(() => broker.close());

t.test('broker restart mid-stream: no loss', async (t) => {
  const topic = 'restart';
  const groupId = 'alignd-restart';
  await createTopics(broker.brokers, [{ topic, numPartitions: 2 }]);

  const dir = mkdtempSync(join(tmpdir(), 'alignd-kafka-restart-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  t.teardown(() => buffer.close());
  const ingest = createIngest({ buffer, limits: defaultLimits });
  const source = createKafkaSource({
    brokers: broker.brokers, topics: [topic], groupId, maxWaitTimeInMs: 100, maxBytesPerPartition: 32 * 1024,
    retry: { initialRetryTime: 300, maxRetryTime: 3000, retries: 10 },
  }, { log: silentLogger });
  await source.start(ingest);

  // A producer that keeps going through the outage: a failed send is retried until it succeeds
  // (a retried chunk may land twice; the buffer must still hold each event once).
  const kafka = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING, retry: { retries: 3, maxRetryTime: 2000 } });
  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  const produced = new Set<string>();
  let sendFailures = 0;
  const production = (async () => {
    for (let c = 0; c < 100; c++) {
      const messages = Array.from({ length: 40 }, (_, j) => {
        const e = makeEvent(c * 40 + j, { event_id: `r-${c}-${j}`, model: `m${j % 4}` });
        produced.add(e.event_id);
        return { key: e.model, value: JSON.stringify(e) };
      });
      for (;;) {
        try {
          await producer.send({ topic, acks: -1, messages });
          break;
        } catch {
          sendFailures++;
          await sleep(500);
        }
      }
      await sleep(100);
    }
  })();

  await waitFor(() => source.counters.stored > 300, 60_000, () => `stored ${source.counters.stored} before the first restart`);
  await broker.stop();
  await sleep(2000);
  await broker.start();
  await waitFor(() => source.counters.stored > 2000, 120_000, () => `stored ${source.counters.stored} before the second restart`);
  await broker.kill();
  await sleep(1000);
  await broker.start();
  await production;
  await producer.disconnect();
  t.comment(`producer send failures during outages: ${sendFailures}; source errors logged and counted: ${source.counters.errors}`);

  await waitFor(async () => {
    const { committed, end } = await committedEqualsEnd(broker.brokers, groupId, topic);
    return JSON.stringify(committed) === JSON.stringify(end);
  }, 120_000, () => `offsets not at the end; source counters ${JSON.stringify(source.counters)}`);
  await source.stop();

  const ids = (buffer.db.prepare('SELECT event_id FROM events').all() as { event_id: string }[]).map((r) => r.event_id);
  const stored = new Set(ids);
  t.equal(ids.length, stored.size, 'each event stored once');
  t.same([...produced].filter((id) => !stored.has(id)), [], 'no produced event is missing');
  t.equal(stored.size, produced.size, 'nothing else stored');
});

t.test('store failure (disk full): nothing committed, redelivered once there is room', async (t) => {
  const topic = 'storefail';
  const groupId = 'alignd-storefail';
  await createTopics(broker.brokers, [{ topic, numPartitions: 1 }]);
  const events = Array.from({ length: 200 }, (_, i) => makeEvent(i, { event_id: `sf-${i}` }));
  const kafka = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING });
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: events.map((e) => ({ key: e.model, value: JSON.stringify(e) })) });
  await producer.disconnect();

  const dir = mkdtempSync(join(tmpdir(), 'alignd-kafka-storefail-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  t.teardown(() => buffer.close());
  // a real SQLITE_FULL: the file may not grow by a single page
  buffer.db.pragma(`max_page_count = ${buffer.db.pragma('page_count', { simple: true }) as number}`);
  const ingest = createIngest({ buffer, limits: defaultLimits });
  const source = createKafkaSource({
    brokers: broker.brokers, topics: [topic], groupId, maxWaitTimeInMs: 100,
    retry: { initialRetryTime: 200, maxRetryTime: 1000, retries: 2 },
  }, { log: silentLogger });
  await source.start(ingest);

  await waitFor(() => ingest.stats.storeErrors >= 3, 60_000, () => `store errors ${ingest.stats.storeErrors}`);
  t.ok(source.counters.errors >= 3, `store failures are counted (${source.counters.errors})`);
  t.equal(source.counters.stored, 0, 'nothing stored');
  t.equal(source.counters.commits, 0, 'nothing committed by the source');
  const during = await committedEqualsEnd(broker.brokers, groupId, topic);
  t.same(during.committed, { 0: '-1' }, 'no offset committed on the broker while the store fails');

  buffer.db.pragma('max_page_count = 1073741823'); // room again
  await waitFor(() => source.counters.stored === events.length, 120_000,
    () => `stored ${source.counters.stored}; counters ${JSON.stringify(source.counters)}`);
  await source.stop();
  const { committed, end } = await committedEqualsEnd(broker.brokers, groupId, topic);
  t.same(committed, end, 'committed after the batch was stored');
  t.equal(buffer.counts().events, events.length, 'every event stored once');
});
