/**
 * The contract between feedback sources (adapters/sources/*) and the ingest stage.
 * A source hands raw bytes to a sink; the sink validates, dedupes and writes durably,
 * and answers one outcome per message. A source acknowledges upstream (Kafka offset commit,
 * HTTP 202, file checkpoint) only after `ingestBatch` has returned (`ingestInSlices` resolved): then the stored
 * events are durable in SQLite.
 */

/** Where a raw message came from; carried into the dead-letter record and the buffer. */
export interface Origin {
  source: 'kafka' | 'http' | 'file' | 'cli';
  topic?: string;
  partition?: number;
  /** Kafka offset as a decimal string (int64). */
  offset?: string;
  /** 1-based line number in a file or NDJSON body. */
  line?: number;
  file?: string;
}

export interface RawFeedback {
  bytes: Buffer;
  origin: Origin;
  /** Message key (Kafka) — by convention the model name. */
  key?: string;
  headers?: Record<string, string>;
}

/**
 * Why a message was refused. Stable codes: they name DLQ reasons and metric labels.
 * `conflict`: the event_id is stored already with other content (the stored event stays);
 * `unknown_model`: no policy of this daemon serves the event's model.
 */
export const REJECT_CODES = ['not_json', 'schema', 'oversize', 'unknown_kind', 'unknown_schema', 'unknown_model', 'conflict'] as const;
export type RejectCode = (typeof REJECT_CODES)[number];

/** A counter per reject code, all zero. */
export const zeroRejectCounts = (): Record<RejectCode, number> =>
  Object.fromEntries(REJECT_CODES.map((c) => [c, 0])) as Record<RejectCode, number>;

export type IngestOutcome =
  | { status: 'stored'; eventId: string }
  | { status: 'duplicate'; eventId: string }
  | { status: 'rejected'; code: RejectCode; reason: string; path?: string; eventId?: string };

export interface BatchOptions {
  /** Written in the same transaction as the events (file offsets): exactly-once for that source. */
  checkpoint?: { key: string; value: string };
  /** Keep rejected messages in the buffer's dead_letters table (sources without a DLQ topic). */
  recordRejects?: boolean;
}

export interface FeedbackSink {
  /**
   * Validate and durably store a batch in one SQLite transaction. Returns one outcome per
   * message, in order. Throws only when the store itself fails (disk full, I/O error): then
   * nothing of the batch was acknowledged and the source must retry it.
   */
  ingestBatch(batch: RawFeedback[], opts?: BatchOptions): IngestOutcome[];
  /**
   * The same for a batch of any size, in slices of a bounded size (one transaction each) with the
   * event loop free between them, so a 16 MB batch never stalls health checks or other sources.
   * Resolves when every slice is durable; a checkpoint is written with the last slice. If a slice
   * fails, the slices before it stay stored (a retry of the whole batch is idempotent).
   */
  ingestInSlices(batch: RawFeedback[], opts?: BatchOptions): Promise<IngestOutcome[]>;
  /** Keep one raw message in the buffer's dead letters (a refusal the DLQ topic cannot take); returns its id there. */
  deadLetter(raw: RawFeedback, outcome: Extract<IngestOutcome, { status: 'rejected' }>): number;
  /** Stored events whose training examples are not derived yet: the buffer's pending work. */
  pending(): number;
}

export interface FeedbackSource {
  readonly name: string;
  start(sink: FeedbackSink): Promise<void>;
  /** Finish the batch in hand, acknowledge it, disconnect. */
  stop(): Promise<void>;
}
