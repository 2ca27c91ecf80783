/**
 * The round store: each round's data mark (the highest example id and event seq its window could
 * see) and each round's recorded outcome (figures and decision, for history and the status page).
 */
import type { Db } from './db.js';

/** A round's recorded outcome: its figures as the status page plots them; every field optional but `decision`. */
export interface RoundOutcome {
  decision: 'promote' | 'reject' | 'hold' | 'discarded';
  version?: string;
  loss?: number;
  klRound?: number;
  klCumulative?: number;
  klBudgetRound?: number;
  klBudgetCumulative?: number;
  rewardLcb?: number;
  unsafeUcb?: number;
  unsafeLimit?: number;
  goldReward?: number;
  reasons?: string[];
  [k: string]: unknown;
}

export interface RoundMark { round: number; maxExampleId: number; maxEventSeq: number }

export type RoundStore = ReturnType<typeof createRoundStore>;

export function createRoundStore(db: Db) {
  const st = {
    lastRound: db.prepare(`SELECT round, max_example_id, max_event_seq FROM rounds WHERE model = ? ORDER BY round DESC LIMIT 1`),
    roundMark: db.prepare(`SELECT max_example_id FROM rounds WHERE model = ? AND round = ?`),
    insertRound: db.prepare(`INSERT INTO rounds (model, round, max_example_id, max_event_seq, created_at) VALUES (?, ?, ?, ?, ?)`),
    maxIds: db.prepare(`SELECT (SELECT coalesce(max(id), 0) FROM examples WHERE model = ?) AS ex, (SELECT coalesce(max(seq), 0) FROM events WHERE model = ? AND derived = 1) AS ev`),
  };

  return {
    /** Highest example id and derived event seq of a model now: what a window opened now could see. */
    maxIds(model: string): { ex: number; ev: number } {
      return st.maxIds.get(model, model) as { ex: number; ev: number };
    },
    /** Example-id mark of round `round` (0 when there is no such round: every example is newer). */
    exampleMark(model: string, round: number | undefined): number {
      return round === undefined ? 0 : ((st.roundMark.get(model, round) as { max_example_id: number } | undefined)?.max_example_id ?? 0);
    },
    /** Close the data window of a new round for `model`: examples up to now belong to it. */
    markRound(model: string): RoundMark {
      return db.transaction(() => {
        const last = st.lastRound.get(model) as { round: number } | undefined;
        const ids = st.maxIds.get(model, model) as { ex: number; ev: number };
        const round = (last?.round ?? 0) + 1;
        st.insertRound.run(model, round, ids.ex, ids.ev, Date.now());
        return { round, maxExampleId: ids.ex, maxEventSeq: ids.ev };
      })();
    },
    lastRound(model: string): RoundMark | undefined {
      const r = st.lastRound.get(model) as { round: number; max_example_id: number; max_event_seq: number } | undefined;
      return r === undefined ? undefined : { round: r.round, maxExampleId: r.max_example_id, maxEventSeq: r.max_event_seq };
    },
    /** Keep a round's outcome (figures and decision) for the status page and `alignd status`. */
    recordRoundResult(model: string, round: number, result: RoundOutcome): void {
      db.prepare(`INSERT INTO round_results (model, round, at, result) VALUES (?, ?, ?, ?)
        ON CONFLICT(model, round) DO UPDATE SET at = excluded.at, result = excluded.result`).run(model, round, Date.now(), JSON.stringify(result));
    },
    /** Round outcomes, oldest first (at most `limit` newest). */
    roundResults(model?: string, limit = 500): Array<{ model: string; round: number; at: number; result: RoundOutcome }> {
      const rows = (model === undefined
        ? db.prepare(`SELECT * FROM round_results ORDER BY at DESC, round DESC LIMIT ?`).all(limit)
        : db.prepare(`SELECT * FROM round_results WHERE model = ? ORDER BY at DESC, round DESC LIMIT ?`).all(model, limit)) as Array<{ model: string; round: number; at: number; result: string }>;
      return rows.reverse().map((r) => ({ model: r.model, round: r.round, at: r.at, result: JSON.parse(r.result) as RoundOutcome }));
    },
  };
}
