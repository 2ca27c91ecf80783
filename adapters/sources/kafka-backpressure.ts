/**
 * Backpressure of the Kafka source: when the buffer's pending work goes above `pauseAbove` the
 * source topics are paused, and resumed once it is below `resumeBelow` (polled every
 * `backpressurePollMs` while paused).
 */
import type { Consumer } from 'kafkajs';
import type { Logger } from '../../daemon/base/log.js';
import type { FeedbackSink } from '../../daemon/feedback/sink.js';
import type { KafkaSourceConfig } from '../../daemon/ingest/kafka-source-config.js';

export interface BackpressureCounters { paused: boolean; pauses: number; resumes: number }

export interface Backpressure {
  /** After a committed batch: pause the topics when the backlog is above the bound. */
  check(c: Consumer, s: FeedbackSink): void;
  /** Stop polling (the source stops, or the consumer is rebuilt). */
  cancel(): void;
  /** The topics as kafkajs pause()/resume() take them. */
  topics(): { topic: string }[];
}

export function createBackpressure(opts: {
  config: KafkaSourceConfig;
  log: Logger;
  counters: BackpressureCounters;
  /** Is `c` still the consumer in use, and is the source running? */
  current: (c: Consumer) => boolean;
  countError: (msg: string, err: unknown) => void;
}): Backpressure {
  const { config, log, counters } = opts;
  let resumeTimer: NodeJS.Timeout | undefined;
  const topics = (): { topic: string }[] => config.topics.map((topic) => ({ topic }));

  function check(c: Consumer, s: FeedbackSink): void {
    if (counters.paused || s.pending() <= config.pauseAbove) return;
    c.pause(topics());
    counters.paused = true;
    counters.pauses++;
    log.warn('buffer backlog above pauseAbove: pausing consumption', { pending: s.pending(), pauseAbove: config.pauseAbove });
    const poll = (): void => {
      resumeTimer = undefined;
      if (!opts.current(c)) return;
      let pending: number;
      try {
        pending = s.pending();
      } catch (err) {
        opts.countError('reading the buffer backlog failed; staying paused', err);
        resumeTimer = setTimeout(poll, config.backpressurePollMs * 4);
        return;
      }
      if (pending < config.resumeBelow) {
        c.resume(topics());
        counters.paused = false;
        counters.resumes++;
        log.info('buffer backlog below resumeBelow: resuming consumption', { pending, resumeBelow: config.resumeBelow });
      } else {
        resumeTimer = setTimeout(poll, config.backpressurePollMs);
      }
    };
    resumeTimer = setTimeout(poll, config.backpressurePollMs);
  }

  return {
    check,
    cancel() {
      if (resumeTimer !== undefined) clearTimeout(resumeTimer);
      resumeTimer = undefined;
    },
    topics,
  };
}
