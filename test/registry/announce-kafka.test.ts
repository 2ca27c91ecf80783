/**
 * Promotions announced on a real Kafka broker (topic alignd.promotions, key = model): the
 * kafkajs announcer wired into promote(), read back by a consumer.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { createTopics, startBroker } from '../harness/kafka.js';
import { kafkaAnnouncer } from '../../adapters/publishers/kafka.js';
import { fileDropTarget } from '../../adapters/servers/file-drop.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { promote } from '../../daemon/registry/promote.js';
import { PROMOTIONS_TOPIC, type PromotionAnnouncement } from '../../daemon/registry/targets.js';

const broker = await startBroker();
t.teardown(() => broker.close());

t.test('each completed promotion is announced once, keyed by model', async (t) => {
  await createTopics(broker.brokers, [{ topic: PROMOTIONS_TOPIC, numPartitions: 1 }]);
  const root = mkdtempSync(join(tmpdir(), 'alignd-announce-'));
  const reg = openRegistry(root, 'tiny');
  for (let i = 1; i <= 2; i++) {
    const dir = join(root, `src${i}`);
    mkdirSync(dir);
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, i }));
    await reg.addVersion({ adapterDir: dir }, { parent: null, base_model: { path: 'builtin:tiny', sha256: null } });
  }
  const announcer = kafkaAnnouncer({ brokers: broker.brokers });
  t.teardown(() => announcer.close());
  const targets = [fileDropTarget({ dir: join(root, 'served') })];
  await promote(reg, 'v1', { targets, publisher: announcer, reason: 'gate' });
  await promote(reg, 'v2', { targets, publisher: announcer, reason: 'gate' });
  await promote(reg, 'v2', { targets, publisher: announcer, reason: 'gate' }); // already served: no announcement

  const kafka = new Kafka({ brokers: broker.brokers, logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: 'announce-test' });
  await consumer.connect();
  t.teardown(() => consumer.disconnect());
  await consumer.subscribe({ topic: PROMOTIONS_TOPIC, fromBeginning: true });
  const got: Array<{ key: string; value: PromotionAnnouncement }> = [];
  await consumer.run({ eachMessage: async ({ message }) => { got.push({ key: message.key?.toString() ?? '', value: JSON.parse(message.value?.toString() ?? '{}') as PromotionAnnouncement }); } });
  for (let i = 0; i < 600 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 500)); // a third message would have arrived by now
  t.same(got.map((g) => g.key), ['tiny', 'tiny']);
  t.match(got.map((g) => g.value), [
    { schema: 'alignd.promotion/v1', model: 'tiny', version: 'v1', name: 'tiny-v1', previous: null, reason: 'gate' },
    { version: 'v2', name: 'tiny-v2', previous: 'v1', adapter_sha256: reg.get('v2')!.manifest.adapter_sha256 },
  ]);
});
