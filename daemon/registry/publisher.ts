/**
 * Publishers that need no broker: a JSONL file (one announcement per line, fsynced) and an
 * in-process list. The Kafka publisher is in adapters/publishers/kafka.ts.
 */
import { appendFileSync, closeSync, fsyncSync, openSync } from 'node:fs';
import type { PromotionAnnouncement, PromotionPublisher } from './targets.js';

export function fileAnnouncer(path: string): PromotionPublisher {
  return {
    async publish(a) {
      const fd = openSync(path, 'a', 0o644);
      try {
        appendFileSync(fd, JSON.stringify(a) + '\n');
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    },
  };
}

export function memoryAnnouncer(): PromotionPublisher & { announcements: PromotionAnnouncement[] } {
  const announcements: PromotionAnnouncement[] = [];
  return { announcements, async publish(a) { announcements.push(a); } };
}
