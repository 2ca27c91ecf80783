/**
 * Announces promotions on Kafka (topic `alignd.promotions`, key = model, value = the JSON
 * announcement), so servers, dashboards and other alignd instances learn the current name.
 */
import { Kafka, type Producer } from 'kafkajs';
import type { PromotionAnnouncement, PromotionPublisher } from '../../daemon/registry/targets.js';
import { PROMOTIONS_TOPIC } from '../../daemon/registry/targets.js';

export function kafkaAnnouncer(opts: { brokers: string[]; topic?: string; clientId?: string }): PromotionPublisher & { close(): Promise<void> } {
  const kafka = new Kafka({ clientId: opts.clientId ?? 'alignd-promotions', brokers: opts.brokers });
  let producer: Producer | undefined;
  return {
    async publish(a: PromotionAnnouncement) {
      if (producer === undefined) {
        producer = kafka.producer({ allowAutoTopicCreation: true });
        await producer.connect();
      }
      await producer.send({ topic: opts.topic ?? PROMOTIONS_TOPIC, messages: [{ key: a.model, value: JSON.stringify(a) }] });
    },
    async close() {
      await producer?.disconnect();
      producer = undefined;
    },
  };
}
