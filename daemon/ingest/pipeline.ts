/**
 * The ingest stage: validate → dedupe → durable write → (later, in chunks) derive examples.
 * Implements FeedbackSink for every source. Counters feed telemetry and `alignd status`.
 */
import type { Logger } from '../base/log.js';
import { silentLogger } from '../base/log.js';
import type { ReplayBuffer, StoredRow } from '../store/buffer.js';
import type { EventLimits } from '../feedback/schema.js';
import { zeroRejectCounts, type BatchOptions, type FeedbackSink, type IngestOutcome, type RawFeedback, type RejectCode } from '../feedback/sink.js';
import { createValidator } from '../feedback/validate.js';

export interface IngestStats {
  received: number;
  stored: number;
  duplicates: number;
  rejected: Record<RejectCode, number>;
  storeErrors: number;
  derived: number;
}

export interface IngestOptions {
  buffer: ReplayBuffer;
  limits: EventLimits;
  log?: Logger;
  /** Events derived per slice of the derivation loop (keeps the event loop responsive). */
  deriveChunk?: number;
  /** Messages per slice of `ingestInSlices` (one transaction each; the loop is free between them). */
  sliceSize?: number;
  /**
   * The models this daemon serves (its policies); events for any other model are refused with
   * `unknown_model` (Kafka: dead-lettered, so they can be replayed once a policy exists).
   * Undefined: every model is taken (`--ingest-only`).
   */
  models?: () => ReadonlySet<string>;
  /** The clock `ts` is checked against (tests). */
  now?: () => number;
}

export type Ingest = FeedbackSink & {
  stats: IngestStats;
  /** Derive examples until nothing is pending or the loop is stopped. */
  startDeriving(): void;
  stopDeriving(): void;
};

export function createIngest(opts: IngestOptions): Ingest {
  const { buffer, limits } = opts;
  const log = opts.log ?? silentLogger;
  const validate = createValidator(limits, opts.now);
  const sliceSize = opts.sliceSize ?? 1000;
  const stats: IngestStats = {
    received: 0, stored: 0, duplicates: 0, storeErrors: 0, derived: 0,
    rejected: zeroRejectCounts(),
  };
  let deriving = false;
  let timer: NodeJS.Immediate | NodeJS.Timeout | undefined;

  const scheduleDerive = (): void => {
    if (!deriving || timer !== undefined) return;
    timer = setImmediate(deriveSlice);
  };
  function deriveSlice(): void {
    timer = undefined;
    if (!deriving) return;
    try {
      const n = buffer.deriveSome(opts.deriveChunk ?? 500);
      stats.derived += n;
      if (n > 0) scheduleDerive();
    } catch (err) {
      // The events are durable; derivation is retried on the next batch or after a pause.
      log.error('deriving training examples failed; will retry', { err: (err as Error).message });
      timer = setTimeout(deriveSlice, 1000);
    }
  }

  type Refusal = Extract<IngestOutcome, { status: 'rejected' }>;

  function refuse(i: number, outcomes: IngestOutcome[], o: Refusal): void {
    stats.rejected[o.code]++;
    outcomes[i] = o;
  }

  function deadLetter(raw: RawFeedback, o: Refusal): number {
    return buffer.recordDeadLetter({ source: raw.origin.source, code: o.code, reason: o.reason, origin: raw.origin, bytes: raw.bytes,
      ...(o.path === undefined ? {} : { path: o.path }), ...(o.eventId === undefined ? {} : { eventId: o.eventId }) });
  }

  function ingestBatch(batch: RawFeedback[], batchOpts: BatchOptions = {}): IngestOutcome[] {
    stats.received += batch.length;
    const outcomes: IngestOutcome[] = new Array(batch.length);
    const rows: StoredRow[] = [];
    const rowIndex: number[] = [];
    const models = opts.models?.();
    batch.forEach((raw, i) => {
      const v = validate(raw.bytes);
      if (!v.ok) {
        refuse(i, outcomes, { status: 'rejected', code: v.code, reason: v.reason,
          ...(v.path === undefined ? {} : { path: v.path }), ...(v.eventId === undefined ? {} : { eventId: v.eventId }) });
      } else if (models !== undefined && !models.has(v.event.model)) {
        refuse(i, outcomes, { status: 'rejected', code: 'unknown_model', path: 'model', eventId: v.event.event_id,
          reason: `no policy of this daemon serves model ${JSON.stringify(v.event.model)} (served: ${[...models].join(', ') || 'none'}); add a policy file for it, or fix the producer's model field` });
      } else {
        rows.push({ event: v.event, text: v.text, origin: raw.origin });
        rowIndex.push(i);
      }
    });
    const write = (): void => {
      buffer.insertEvents(rows, batchOpts.checkpoint).forEach((result, j) => {
        const i = rowIndex[j] as number;
        const eventId = rows[j]!.event.event_id;
        if (result === 'stored') {
          outcomes[i] = { status: 'stored', eventId };
          stats.stored++;
        } else if (result === 'duplicate') {
          outcomes[i] = { status: 'duplicate', eventId };
          stats.duplicates++;
        } else {
          refuse(i, outcomes, { status: 'rejected', code: 'conflict', path: 'event_id', eventId,
            reason: `event_id ${JSON.stringify(eventId)} is stored already with other content; the stored event stays. Give each distinct event its own event_id` });
        }
      });
      if (batchOpts.recordRejects === true) {
        outcomes.forEach((o, i) => { if (o.status === 'rejected') deadLetter(batch[i] as RawFeedback, o); });
      }
    };
    try {
      // With recordRejects the refusals are kept in the same transaction as the events.
      if (batchOpts.recordRejects === true) buffer.db.transaction(write)();
      else write();
    } catch (err) {
      stats.storeErrors++;
      buffer.recount(); // a rolled-back transaction may have been counted
      throw err;
    }
    scheduleDerive();
    return outcomes;
  }

  return {
    stats,
    pending: () => buffer.pending(),
    ingestBatch,
    async ingestInSlices(batch, batchOpts = {}) {
      const outcomes: IngestOutcome[] = [];
      for (let from = 0; from < batch.length; from += sliceSize) {
        if (from > 0) await new Promise<void>((r) => setImmediate(r));
        const { checkpoint, ...rest } = batchOpts;
        const last = from + sliceSize >= batch.length;
        outcomes.push(...ingestBatch(batch.slice(from, from + sliceSize), last && checkpoint !== undefined ? { ...rest, checkpoint } : rest));
      }
      return outcomes;
    },
    deadLetter,
    startDeriving() {
      deriving = true;
      scheduleDerive();
    },
    stopDeriving() {
      deriving = false;
      if (timer !== undefined) {
        clearImmediate(timer as NodeJS.Immediate);
        clearTimeout(timer as NodeJS.Timeout);
        timer = undefined;
      }
    },
  };
}
