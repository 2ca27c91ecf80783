/**
 * Feedback of given model versions as probation reads it: stored events in the order alignd stored
 * them (seq), without their texts — kind, tenant, binary label, normalised rating, whether an edit
 * changed the response, an exposure's count. Read straight from the events table, newer than a
 * cursor, so a probation follows the stream and a restart replays it in the same order.
 */
import type { FeedbackKind } from '../feedback/schema.js';
import type { Db } from './db.js';

export interface VersionFeedbackRow {
  seq: number;
  model_version: string;
  kind: FeedbackKind;
  tenant: string | null;
  ingested_at: number;
  label: 'up' | 'down' | null;
  score: number | null;
  /** edit: 1 when `edited` differs from `response`; null for other kinds (and for retired bodies). */
  changed: number | null;
  /** exposure: served responses. */
  count: number | null;
}

const COLUMNS = `seq, model_version, kind, tenant, ingested_at, label, score,
  CASE WHEN kind = 'edit' THEN json_extract(body, '$.edited') != json_extract(body, '$.response') END AS changed,
  CASE WHEN kind = 'exposure' THEN json_extract(body, '$.count') END AS count`;

const placeholders = (n: number): string => Array.from({ length: n }, () => '?').join(', ');

/** Events of `versions` stored after `afterSeq` and at or after `fromMs`, oldest first, at most `limit`. */
export function versionFeedbackSince(db: Db, q: { model: string; versions: string[]; afterSeq: number; fromMs: number; limit: number }): VersionFeedbackRow[] {
  return db.prepare(`SELECT ${COLUMNS} FROM events WHERE model = ? AND seq > ? AND ingested_at >= ? AND model_version IN (${placeholders(q.versions.length)})
    ORDER BY seq LIMIT ?`).all(q.model, q.afterSeq, q.fromMs, ...q.versions, q.limit) as VersionFeedbackRow[];
}

/** The last `limit` feedback events (no exposures) of `versions` stored before `beforeMs`, oldest first: a baseline window. */
export function versionFeedbackWindow(db: Db, q: { model: string; versions: string[]; beforeMs: number; limit: number }): VersionFeedbackRow[] {
  const rows = db.prepare(`SELECT ${COLUMNS} FROM events WHERE model = ? AND ingested_at < ? AND kind != 'exposure' AND model_version IN (${placeholders(q.versions.length)})
    ORDER BY seq DESC LIMIT ?`).all(q.model, q.beforeMs, ...q.versions, q.limit) as VersionFeedbackRow[];
  return rows.reverse();
}

/** Does any stored event of `versions` name a tenant? */
export function versionsHaveTenants(db: Db, model: string, versions: string[]): boolean {
  return db.prepare(`SELECT 1 FROM events WHERE model = ? AND tenant IS NOT NULL AND model_version IN (${placeholders(versions.length)}) LIMIT 1`)
    .get(model, ...versions) !== undefined;
}
