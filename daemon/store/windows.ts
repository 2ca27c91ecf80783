/**
 * Window selection: which derived examples a round trains on (new ones since a round's mark plus a
 * seeded replay sample of older ones), the held-out split it evaluates on, and the per-user and
 * per-tenant share caps applied to every window (a defence against feedback poisoning).
 */
import { AligndError } from '../base/errors.js';
import { mulberry32 } from '../base/random.js';
import type { FeedbackEvent, Prompt } from '../feedback/schema.js';
import type { ExampleType } from '../feedback/derive.js';
import type { Db } from './db.js';
import type { RoundStore } from './rounds.js';

export interface Example {
  id: number;
  model: string;
  type: ExampleType;
  originKind: FeedbackEvent['kind'];
  eventSeq: number;
  eventIds: string[];
  prompt: Prompt;
  chosen: string | null;
  rejected: string | null;
  response: string | null;
  label: string | null;
  margin: number | null;
  category: string | null;
  severity: string | null;
  user: string | null;
  tenant: string | null;
  heldout: boolean;
}

export interface WindowRequest {
  model: string;
  types: ExampleType[];
  /** Examples added after this round's mark are "new"; undefined: every example is new. */
  sinceRound?: number;
  /** Share of the window drawn from older examples, in [0, 1). */
  replayFraction: number;
  /** Most examples in the window (new ones first, then replay); undefined: no limit. */
  maxExamples?: number;
  /** No single user above this share of the window (anonymous events are not grouped). */
  maxUserShare?: number;
  maxTenantShare?: number;
  seed: number;
}

export interface TrainingWindow {
  examples: Example[];
  newCount: number;
  replayCount: number;
  /** Examples dropped by the per-user/tenant caps. */
  cappedOut: number;
  /** Highest example id and event seq the window could see: the round's data mark. */
  maxExampleId: number;
  maxEventSeq: number;
}

function shuffle<T>(xs: T[], rand: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [xs[i], xs[j]] = [xs[j] as T, xs[i] as T];
  }
  return xs;
}

type ExampleRow = {
  id: number; model: string; type: ExampleType; origin_kind: FeedbackEvent['kind']; event_seq: number; event_ids: string;
  prompt: string; chosen: string | null; rejected: string | null; response: string | null; label: string | null;
  margin: number | null; category: string | null; severity: string | null; user: string | null; tenant: string | null; heldout: number;
};

function toExample(r: ExampleRow): Example {
  return {
    id: r.id, model: r.model, type: r.type, originKind: r.origin_kind, eventSeq: r.event_seq,
    eventIds: JSON.parse(r.event_ids) as string[], prompt: JSON.parse(r.prompt) as Prompt,
    chosen: r.chosen, rejected: r.rejected, response: r.response, label: r.label, margin: r.margin,
    category: r.category, severity: r.severity, user: r.user, tenant: r.tenant, heldout: r.heldout === 1,
  };
}

function typeList(types: ExampleType[]): string {
  const ok = new Set<ExampleType>(['pair', 'kto', 'sft', 'safety']);
  for (const t of types) if (!ok.has(t)) throw new AligndError('INTERNAL', `unknown example type ${t}`);
  return types.map((t) => `'${t}'`).join(',');
}

/** Drop examples until no user/tenant holds more than its share of what is left. */
export function applyCaps(examples: Example[], userShare: number | undefined, tenantShare: number | undefined): Example[] {
  let kept = examples;
  for (let iter = 0; iter < 64; iter++) {
    const before = kept.length;
    for (const [key, share] of [['user', userShare], ['tenant', tenantShare]] as const) {
      if (share === undefined || share >= 1) continue;
      const cap = Math.floor(share * kept.length);
      const seen = new Map<string, number>();
      kept = kept.filter((ex) => {
        const who = ex[key];
        if (who === null) return true;
        const n = (seen.get(who) ?? 0) + 1;
        seen.set(who, n);
        return n <= cap;
      });
    }
    if (kept.length === before) break;
  }
  return kept;
}

export type WindowStore = ReturnType<typeof createWindowStore>;

export function createWindowStore(db: Db, rounds: RoundStore) {
  function examplesWhere(where: string, params: unknown[]): Example[] {
    return (db.prepare(`SELECT * FROM examples WHERE ${where} ORDER BY id`).all(...params) as ExampleRow[]).map(toExample);
  }

  return {
    /** Count of training (non-held-out) examples added after round `round`'s mark. */
    newSinceCount(model: string, types: ExampleType[], round: number | undefined): number {
      const mark = rounds.exampleMark(model, round);
      return (db.prepare(`SELECT count(*) AS n FROM examples WHERE model = ? AND heldout = 0 AND type IN (${typeList(types)}) AND id > ?`)
        .get(model, mark) as { n: number }).n;
    },
    /**
     * A round's training data: new examples since the round's mark plus a seeded replay sample of
     * older ones (replayFraction of the window), held-out examples never included, then the caps.
     */
    window(req: WindowRequest): TrainingWindow {
      if (!(req.replayFraction >= 0 && req.replayFraction < 1)) {
        throw new AligndError('CONFIG_INVALID', `replayFraction ${req.replayFraction} must be in [0, 1)`);
      }
      const types = typeList(req.types);
      const mark = rounds.exampleMark(req.model, req.sinceRound);
      const ids = rounds.maxIds(req.model);
      const rand = mulberry32(req.seed).next;
      let fresh = examplesWhere(`model = ? AND heldout = 0 AND type IN (${types}) AND id > ? AND id <= ?`, [req.model, mark, ids.ex]);
      if (req.maxExamples !== undefined && fresh.length > req.maxExamples) fresh = fresh.slice(fresh.length - req.maxExamples);
      const wantReplay = Math.round((fresh.length * req.replayFraction) / (1 - req.replayFraction));
      const olderIds = (db.prepare(`SELECT id FROM examples WHERE model = ? AND heldout = 0 AND type IN (${types}) AND id <= ?`)
        .all(req.model, mark) as Array<{ id: number }>).map((r) => r.id);
      const replayIds = shuffle(olderIds, rand).slice(0, Math.min(wantReplay, olderIds.length));
      const replay = replayIds.length === 0 ? []
        : examplesWhere(`id IN (${replayIds.join(',')})`, []);
      const all = shuffle([...fresh, ...replay], rand);
      const kept = applyCaps(all, req.maxUserShare, req.maxTenantShare);
      const keptIds = new Set(kept.map((e) => e.id));
      return {
        examples: kept, newCount: fresh.filter((e) => keptIds.has(e.id)).length, replayCount: replay.filter((e) => keptIds.has(e.id)).length,
        cappedOut: all.length - kept.length, maxExampleId: ids.ex, maxEventSeq: ids.ev,
      };
    },
    /** The deterministic held-out split (never trained on), newest first, at most `limit`. */
    heldout(model: string, types: ExampleType[], limit = 1000): Example[] {
      return (db.prepare(`SELECT * FROM examples WHERE model = ? AND heldout = 1 AND type IN (${typeList(types)}) ORDER BY id DESC LIMIT ?`)
        .all(model, limit) as ExampleRow[]).map(toExample);
    },
  };
}
