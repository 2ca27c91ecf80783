/**
 * The consuming process dies (SIGKILL) at random points while a producer keeps producing; after the
 * last restart drains the topic, every produced event is in the buffer exactly once. Then a graceful
 * stop (SIGTERM) mid-stream: exit 0, and the committed offsets are exactly what was stored.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Kafka, logLevel } from 'kafkajs';
import { makeEvent } from '../harness/events.js';
import { createTopics, startBroker } from '../harness/kafka.js';
import { committedEqualsEnd, sleep, spawnConsumer, waitFor } from './util.js';
import { mulberry32 } from '../../daemon/base/random.js';

function eventIdsIn(dbPath: string): string[] {
  const db = new Database(dbPath, { readonly: true });
  try {
    return (db.prepare('SELECT event_id FROM events').all() as { event_id: string }[]).map((r) => r.event_id);
  } finally {
    db.close();
  }
}

t.test('kafka source under SIGKILL and SIGTERM', async (t) => {
  const broker = await startBroker();
  t.teardown(() => broker.close());
  const dir = mkdtempSync(join(tmpdir(), 'alignd-kafka-crash-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const kafka = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING, retry: { retries: 20 } });

  t.test('kill -9 at random points while producing: nothing lost, nothing duplicated', async (t) => {
    const topic = 'crash';
    const groupId = 'alignd-crash';
    const dbPath = join(dir, 'crash.sqlite');
    await createTopics(broker.brokers, [{ topic, numPartitions: 3 }]);
    const seed = Number(process.env['ALIGND_CRASH_SEED'] ?? Date.now() % 1_000_000);
    t.comment(`kill-point seed ${seed} (rerun with ALIGND_CRASH_SEED=${seed})`);
    // Kill points are random but reproducible from the printed seed.
    const random = mulberry32(seed).next;

    // The producer: 160 chunks of 50 events, one every ~120 ms; every 4th chunk re-sends the one before.
    const producer = kafka.producer({ idempotent: true });
    await producer.connect();
    const produced = new Set<string>();
    let producing = true;
    const production = (async () => {
      let prev: { key: string; value: string }[] = [];
      for (let c = 0; c < 160; c++) {
        const chunk = Array.from({ length: 50 }, (_, j) => {
          const e = makeEvent(c * 50 + j, { event_id: `crash-${c}-${j}`, model: `m${j % 5}` });
          produced.add(e.event_id);
          return { key: e.model, value: JSON.stringify(e) };
        });
        await producer.send({ topic, acks: -1, messages: c % 4 === 3 ? [...chunk, ...prev] : chunk });
        prev = chunk;
        await sleep(120);
      }
      producing = false;
    })();

    for (let kill = 0; kill < 4; kill++) {
      const child = spawnConsumer({ brokers: broker.brokers, topic, groupId, dbPath });
      await child.ready;
      await sleep(300 + Math.floor(random() * 2500));
      child.proc.kill('SIGKILL');
      const exit = await child.exited;
      t.equal(exit.signal, 'SIGKILL', `consumer ${kill + 1} killed mid-stream`);
    }
    await production;
    await producer.disconnect();
    t.notOk(producing, 'producer finished');
    t.comment(`${eventIdsIn(dbPath).length} of ${produced.size} events stored by the killed consumers`);

    const last = spawnConsumer({ brokers: broker.brokers, topic, groupId, dbPath });
    await last.ready;
    await waitFor(async () => {
      const { committed, end } = await committedEqualsEnd(broker.brokers, groupId, topic);
      return JSON.stringify(committed) === JSON.stringify(end);
    }, 120_000, () => 'the last consumer did not commit up to the end offsets');
    last.proc.kill('SIGTERM');
    const exit = await last.exited;
    t.equal(exit.code, 0, `the last consumer stops cleanly${exit.code === 0 ? '' : ':\n' + exit.stderr.slice(-2000)}`);

    const ids = eventIdsIn(dbPath);
    const unique = new Set(ids);
    t.equal(ids.length, unique.size, 'no event stored twice');
    const missing = [...produced].filter((id) => !unique.has(id));
    t.same(missing, [], 'every produced event is in the buffer');
    t.equal(unique.size, produced.size, 'and nothing else');
  });

  t.test('SIGTERM mid-stream: exit 0, committed offsets are exactly what was stored', async (t) => {
    const topic = 'graceful';
    const groupId = 'alignd-graceful';
    const dbPath = join(dir, 'graceful.sqlite');
    await createTopics(broker.brokers, [{ topic, numPartitions: 2 }]);
    const producer = kafka.producer({ idempotent: true });
    await producer.connect();
    for (let c = 0; c < 40; c++) {
      await producer.send({ topic, acks: -1, messages: Array.from({ length: 250 }, (_, j) => {
        const e = makeEvent(c * 250 + j, { event_id: `g-${c}-${j}`, model: `m${j % 7}` });
        return { key: e.model, value: JSON.stringify(e) };
      }) });
    }
    await producer.disconnect();

    const child = spawnConsumer({ brokers: broker.brokers, topic, groupId, dbPath });
    await child.ready;
    // stop once it is part-way through (small fetches make this many batches)
    await waitFor(() => { try { return eventIdsIn(dbPath).length > 500; } catch { return false; } }, 60_000, () => 'child stored nothing');
    child.proc.kill('SIGTERM');
    const exit = await child.exited;
    t.equal(exit.code, 0, `exits 0 on SIGTERM${exit.code === 0 ? '' : ':\n' + exit.stderr.slice(-2000)}`);
    t.match(exit.stdout, /"stopped":"SIGTERM"/, 'reports its stop');

    const { committed } = await committedEqualsEnd(broker.brokers, groupId, topic);
    const db = new Database(dbPath, { readonly: true });
    t.teardown(() => db.close());
    let total = 0;
    for (const [p, off] of Object.entries(committed)) {
      const c = Number(off);
      const below = (db.prepare('SELECT count(*) AS n FROM events WHERE partition = ? AND CAST("offset" AS INTEGER) < ?').get(Number(p), c) as { n: number }).n;
      const above = (db.prepare('SELECT count(*) AS n FROM events WHERE partition = ? AND CAST("offset" AS INTEGER) >= ?').get(Number(p), c) as { n: number }).n;
      t.equal(below, Math.max(c, 0), `partition ${p}: every message below the committed offset ${c} is stored`);
      t.equal(above, 0, `partition ${p}: nothing stored beyond the committed offset`);
      total += below;
    }
    t.ok(total > 0, 'offsets were committed');
    t.comment(`stopped with ${total} of 10000 committed`);
  });
});
