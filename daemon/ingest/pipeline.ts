/**
 * The ingest stage: validate → dedupe → durable write → (later, in chunks) derive examples.
 * Implements FeedbackSink for every source. Counters feed telemetry and `alignd status`.
 */
import type { Logger } from '../base/log.js';
import { silentLogger } from '../base/log.js';
import type { ReplayBuffer, StoredRow } from '../store/buffer.js';
import type { EventLimits } from '../feedback/schema.js';
import type { FeedbackSink, IngestOutcome, RawFeedback, RejectCode } from '../feedback/sink.js';
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
  const validate = createValidator(limits);
  const stats: IngestStats = {
    received: 0, stored: 0, duplicates: 0, storeErrors: 0, derived: 0,
    rejected: { not_json: 0, schema: 0, oversize: 0, unknown_kind: 0, unknown_schema: 0 },
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

  return {
    stats,
    pending: () => buffer.pending(),
    ingestBatch(batch, batchOpts = {}) {
      stats.received += batch.length;
      const outcomes: IngestOutcome[] = new Array(batch.length);
      const rows: StoredRow[] = [];
      const rowIndex: number[] = [];
      batch.forEach((raw, i) => {
        const v = validate(raw.bytes);
        if (v.ok) {
          rows.push({ event: v.event, text: v.text, origin: raw.origin });
          rowIndex.push(i);
        } else {
          stats.rejected[v.code]++;
          outcomes[i] = { status: 'rejected', code: v.code, reason: v.reason,
            ...(v.path === undefined ? {} : { path: v.path }), ...(v.eventId === undefined ? {} : { eventId: v.eventId }) };
        }
      });
      let stored: boolean[];
      try {
        if (batchOpts.recordRejects === true) {
          buffer.db.transaction(() => {
            stored = buffer.insertEvents(rows, batchOpts.checkpoint);
            outcomes.forEach((o, i) => {
              if (o?.status !== 'rejected') return;
              const raw = batch[i] as RawFeedback;
              buffer.recordDeadLetter({ source: raw.origin.source, code: o.code, reason: o.reason, origin: raw.origin, bytes: raw.bytes,
                ...(o.path === undefined ? {} : { path: o.path }), ...(o.eventId === undefined ? {} : { eventId: o.eventId }) });
            });
          })();
        } else {
          stored = buffer.insertEvents(rows, batchOpts.checkpoint);
        }
      } catch (err) {
        stats.storeErrors++;
        throw err;
      }
      stored!.forEach((ok, j) => {
        const i = rowIndex[j] as number;
        const eventId = rows[j]!.event.event_id;
        outcomes[i] = ok ? { status: 'stored', eventId } : { status: 'duplicate', eventId };
        if (ok) stats.stored++; else stats.duplicates++;
      });
      scheduleDerive();
      return outcomes;
    },
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
