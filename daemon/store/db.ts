/**
 * The replay buffer's SQLite file: WAL journal, synchronous=FULL so that a committed
 * transaction survives a process kill and a power cut (Kafka offsets are committed only after it).
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { AligndError } from '../base/errors.js';

export type Db = Database.Database;

const SCHEMA_VERSION = 6;

/** Round outcomes over time (the status page's plots, `alignd status`). */
const MIGRATION_2 = `
CREATE TABLE round_results (
  model TEXT NOT NULL, round INTEGER NOT NULL, at INTEGER NOT NULL,
  result TEXT NOT NULL,
  PRIMARY KEY (model, round)
);
`;

/**
 * Only binary and rating events pair by prompt, so only they need the prompt index: a partial
 * index per kind keeps the index insert off the ingest hot path of every other kind (bench:ingest
 * measured the full index at ~40% of the per-row insert cost).
 */
const MIGRATION_3 = `
DROP INDEX IF EXISTS events_prompt;
CREATE INDEX events_prompt_binary ON events(model, prompt_hash, heldout) WHERE kind = 'binary';
CREATE INDEX events_prompt_rating ON events(model, prompt_hash, heldout) WHERE kind = 'rating';
`;

/**
 * sha256 of each event's content (canonical JSON of the validated event), so a second event under
 * a stored event_id is told apart: the same content is a duplicate, other content a conflict.
 * Rows from before this migration have none and count as duplicates.
 */
const MIGRATION_4 = `
ALTER TABLE events ADD COLUMN content_sha256 TEXT;
`;

/**
 * Per model and user: when the user was first seen (ingest time, not the event's own ts, which the
 * sender picks) and how many events they sent. Window caps group users seen recently or with few
 * events together (windows.ts): a fresh user id per event must not dodge the per-user cap.
 */
const MIGRATION_5 = `
CREATE TABLE users (
  model TEXT NOT NULL, user TEXT NOT NULL, first_seen INTEGER NOT NULL, events INTEGER NOT NULL,
  PRIMARY KEY (model, user)
) WITHOUT ROWID;
INSERT INTO users (model, user, first_seen, events)
  SELECT model, user, min(ingested_at), count(*) FROM events WHERE user IS NOT NULL GROUP BY model, user;
`;

/**
 * The live events (body not yet retired) in seq order: retention takes the oldest of them a slice
 * at a time without walking the tombstones that accumulate before them.
 */
const MIGRATION_6 = `
CREATE INDEX events_live ON events(seq) WHERE body IS NOT NULL;
`;

const MIGRATION_1 = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id TEXT NOT NULL UNIQUE,
  model TEXT NOT NULL,
  model_version TEXT NOT NULL,
  kind TEXT NOT NULL,
  ts TEXT NOT NULL,
  ingested_at INTEGER NOT NULL,
  user TEXT, tenant TEXT, channel TEXT,
  prompt_hash TEXT NOT NULL,
  heldout INTEGER NOT NULL,
  label TEXT,          -- binary: up|down
  score REAL,          -- rating: score normalised to [0,1] by its scale
  body TEXT,           -- the validated event as JSON; NULL once retired by retention
  source TEXT NOT NULL, topic TEXT, partition INTEGER, "offset" TEXT,
  derived INTEGER NOT NULL DEFAULT 0,
  pair_used INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_pending ON events(seq) WHERE derived = 0;
CREATE INDEX events_prompt ON events(model, prompt_hash, kind, heldout);
CREATE INDEX events_ingested ON events(ingested_at);
CREATE TABLE examples (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  model TEXT NOT NULL,
  type TEXT NOT NULL CHECK (type IN ('pair', 'kto', 'sft', 'safety')),
  origin_kind TEXT NOT NULL,
  event_seq INTEGER NOT NULL,
  event_ids TEXT NOT NULL,
  prompt TEXT NOT NULL,
  chosen TEXT, rejected TEXT, response TEXT, label TEXT,
  margin REAL, category TEXT, severity TEXT,
  user TEXT, tenant TEXT,
  heldout INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX examples_by_model ON examples(model, type, heldout, id);
CREATE INDEX examples_by_event ON examples(event_seq);
CREATE TABLE rounds (
  model TEXT NOT NULL, round INTEGER NOT NULL,
  max_example_id INTEGER NOT NULL, max_event_seq INTEGER NOT NULL, created_at INTEGER NOT NULL,
  PRIMARY KEY (model, round)
);
CREATE TABLE checkpoints (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL, source TEXT NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL,
  path TEXT, event_id TEXT, origin TEXT NOT NULL, bytes BLOB NOT NULL
);
`;

export function openDb(path: string): Db {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  let db: Db;
  try {
    db = new Database(path);
  } catch (err) {
    throw new AligndError('STORE_FAILED', `cannot open the replay buffer at ${path}`, {
      cause: err, action: 'check that the data directory exists, is writable, and is not on a network filesystem' });
  }
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = ON');
  migrate(db, path);
  return db;
}

function migrate(db: Db, path: string): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new AligndError('STORE_FAILED', `replay buffer ${path} has schema version ${version}, newer than this alignd (${SCHEMA_VERSION})`, {
      action: 'run the alignd release that wrote it, or point data_dir elsewhere' });
  }
  const steps = [MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4, MIGRATION_5, MIGRATION_6];
  db.transaction(() => {
    for (let v = version; v < steps.length; v++) db.exec(steps[v] as string);
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  })();
}
