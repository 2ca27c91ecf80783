/**
 * Publishers that need no broker: a JSONL file (one announcement per line, fsynced; a torn last
 * line is cut before the next) and an in-process list. The Kafka publisher is in
 * adapters/publishers/kafka.ts.
 */
import { appendLineDurable } from '../base/fs-durable.js';
import type { PromotionAnnouncement, PromotionPublisher } from './targets.js';

export function fileAnnouncer(path: string): PromotionPublisher {
  return {
    async publish(a) {
      appendLineDurable(path, JSON.stringify(a));
    },
  };
}

export function memoryAnnouncer(): PromotionPublisher & { announcements: PromotionAnnouncement[] } {
  const announcements: PromotionAnnouncement[] = [];
  return { announcements, async publish(a) { announcements.push(a); } };
}
