/**
 * The example derivation store: turns stored events into training examples after the durable
 * write, in bounded chunks (one transaction each), so the event loop stays responsive and
 * `pending` (the backlog sources use for backpressure) drains. Pairing of binary and rating events
 * by prompt reads earlier derived events of the same prompt and split.
 */
import type { FeedbackEvent } from '../feedback/schema.js';
import { deriveOwn, pairBinary, pairRatings, type ExampleDraft, type PromptPeer } from '../feedback/derive.js';
import type { Db } from './db.js';
import { bump, type Tally } from './events.js';

export type DerivationStore = ReturnType<typeof createDerivationStore>;

export function createDerivationStore(db: Db, tally: Tally) {
  const st = {
    pendingEvents: db.prepare(`SELECT seq, event_id, model, prompt_hash, heldout, user, tenant, body FROM events WHERE derived = 0 ORDER BY seq LIMIT ?`),
    markDerived: db.prepare(`UPDATE events SET derived = 1 WHERE seq = ?`),
    markPaired: db.prepare(`UPDATE events SET pair_used = 1 WHERE seq = ?`),
    binaryPeers: db.prepare(`SELECT seq, event_id, label, json_extract(body, '$.response') AS response FROM events
      WHERE model = ? AND prompt_hash = ? AND kind = 'binary' AND heldout = ? AND pair_used = 0 AND derived = 1 AND seq < ? AND body IS NOT NULL
      ORDER BY seq LIMIT 64`),
    ratingPeers: db.prepare(`SELECT seq, event_id, score, json_extract(body, '$.response') AS response FROM events
      WHERE model = ? AND prompt_hash = ? AND kind = 'rating' AND heldout = ? AND derived = 1 AND seq < ? AND body IS NOT NULL
      ORDER BY seq DESC LIMIT 64`),
    insertExample: db.prepare(`INSERT INTO examples
      (model, type, origin_kind, event_seq, event_ids, prompt, chosen, rejected, response, label, margin, category, severity, user, tenant, heldout, created_at)
      VALUES (@model, @type, @origin_kind, @event_seq, @event_ids, @prompt, @chosen, @rejected, @response, @label, @margin, @category, @severity, @user, @tenant, @heldout, @created_at)`),
  };

  const deriveTx = db.transaction((limit: number): number => {
    const rows = st.pendingEvents.all(limit) as Array<{ seq: number; event_id: string; model: string; prompt_hash: string; heldout: number; user: string | null; tenant: string | null; body: string | null }>;
    const now = Date.now();
    for (const row of rows) {
      if (row.body !== null) {
        const e = JSON.parse(row.body) as FeedbackEvent;
        const drafts: ExampleDraft[] = deriveOwn(e);
        if (e.kind === 'binary') {
          const peers = (st.binaryPeers.all(row.model, row.prompt_hash, row.heldout, row.seq) as Array<{ seq: number; event_id: string; label: 'up' | 'down'; response: string }>)
            .map((p): PromptPeer => ({ seq: p.seq, eventId: p.event_id, label: p.label, response: p.response }));
          const paired = pairBinary(e, peers);
          if (paired !== undefined) {
            drafts.push(paired.draft);
            st.markPaired.run(paired.peer.seq);
            st.markPaired.run(row.seq);
          }
        } else if (e.kind === 'rating') {
          const peers = (st.ratingPeers.all(row.model, row.prompt_hash, row.heldout, row.seq) as Array<{ seq: number; event_id: string; score: number; response: string }>)
            .map((p): PromptPeer => ({ seq: p.seq, eventId: p.event_id, score: p.score, response: p.response }));
          drafts.push(...pairRatings(e, peers));
        }
        for (const d of drafts) {
          bump(tally.examples, d.type, 1);
          st.insertExample.run({
            model: row.model, type: d.type, origin_kind: d.originKind, event_seq: row.seq, event_ids: JSON.stringify(d.eventIds),
            prompt: JSON.stringify(d.prompt), chosen: d.chosen ?? null, rejected: d.rejected ?? null, response: d.response ?? null,
            label: d.label ?? null, margin: d.margin ?? null, category: d.category ?? null, severity: d.severity ?? null,
            user: row.user, tenant: row.tenant, heldout: row.heldout, created_at: now,
          });
        }
      }
      st.markDerived.run(row.seq);
    }
    return rows.length;
  });

  /** Derive examples for up to `limit` pending events; returns how many were processed. */
  function deriveSome(limit = 500): number {
    const before = { ...tally.examples };
    let n: number;
    try {
      n = deriveTx(limit);
    } catch (err) {
      tally.examples = before; // the transaction rolled back: so do the counts
      throw err;
    }
    tally.pending = Math.max(0, tally.pending - n);
    return n;
  }

  return {
    deriveSome,
    deriveAll(): number {
      let total = 0;
      for (let n = deriveSome(); n > 0; n = deriveSome()) total += n;
      return total;
    },
  };
}
