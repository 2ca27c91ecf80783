/**
 * The replay buffer: feedback events and the training examples derived from them, in one SQLite
 * database. Four parts, each with one job, over the same connection:
 *
 * - events.ts      the event store (idempotent inserts, checkpoints, dead letters, retention, counts);
 * - derivation.ts  examples derived from stored events in bounded chunks (`pending()` is the backlog
 *                  sources use for backpressure);
 * - windows.ts     window selection: new + replayed examples with per-user/tenant caps, the held-out split;
 * - rounds.ts      round marks and recorded round outcomes.
 */
import { AligndError } from '../base/errors.js';
import { openDb, type Db } from './db.js';
import { createDerivationStore } from './derivation.js';
import { createEventStore, tallyOf } from './events.js';
import { createRoundStore } from './rounds.js';
import { createWindowStore } from './windows.js';

export { contentSha256, isHeldout, promptHash, type Counts, type InsertResult, type RetentionPolicy, type StoredRow } from './events.js';
export type { CappedOut, Example, NewUserRule, TrainingWindow, WindowRequest } from './windows.js';
export type { RoundMark, RoundOutcome } from './rounds.js';

export interface BufferOptions {
  path: string;
  /** Share of events held out from training, decided by hash of event_id. */
  heldoutFraction: number;
  /** The clock of ingest times (users' first-seen times, retention); tests move it. */
  now?: () => number;
}

export type ReplayBuffer = ReturnType<typeof openBuffer>;

export function openBuffer(opts: BufferOptions) {
  if (!(opts.heldoutFraction >= 0 && opts.heldoutFraction < 1)) {
    throw new AligndError('CONFIG_INVALID', `heldoutFraction ${opts.heldoutFraction} must be in [0, 1)`);
  }
  const db: Db = openDb(opts.path);
  const tally = tallyOf(db); // one count at open; kept up to date from here on
  const events = createEventStore(db, { heldoutFraction: opts.heldoutFraction, now: opts.now ?? Date.now }, tally);
  const derivation = createDerivationStore(db, tally);
  const rounds = createRoundStore(db);
  const windows = createWindowStore(db, rounds);
  return {
    db,
    ...events,
    ...derivation,
    ...windows,
    markRound: rounds.markRound,
    lastRound: rounds.lastRound,
    recordRoundResult: rounds.recordRoundResult,
    roundResults: rounds.roundResults,
    close(): void {
      db.close();
    },
  };
}
