/**
 * Window selection: which derived examples a round trains on (new ones since a round's mark plus a
 * seeded replay sample of older ones), the held-out split it evaluates on, and the share caps
 * applied to every window (a defence against feedback poisoning; the threat model is in
 * daemon/store/README.md):
 *
 * - per user: no user above `maxUserShare` of the window; events without `source.user` are one
 *   user together ("anonymous"), so leaving the field out does not escape the cap;
 * - new users together: users first seen less than `newUsers.minAgeMs` ago, or with fewer than
 *   `newUsers.minEvents` events, are one bucket capped at `newUsers.maxShare`, so a fresh user
 *   id per event does not escape the per-user cap either;
 * - per tenant: no tenant above `maxTenantShare` (events without a tenant are not grouped).
 *
 * The caps are shares of the window that remains: drops repeat until every bucket is within its
 * share, so a window made only of one bucket shrinks to nothing (the round says so).
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
  /** No single user above this share of the window; events without a user count as one user. */
  maxUserShare?: number;
  maxTenantShare?: number;
  /** Users seen recently or rarely, together, at most `maxShare` of the window. */
  newUsers?: NewUserRule;
  seed: number;
  /** The clock user ages are measured against (tests). */
  now?: number;
}

export interface NewUserRule { minEvents: number; minAgeMs: number; maxShare: number }

/** What the caps dropped, by rule. */
export interface CappedOut { user: number; tenant: number; newUsers: number }

export interface TrainingWindow {
  examples: Example[];
  newCount: number;
  replayCount: number;
  /** Examples dropped by the caps, in all and by rule. */
  cappedOut: number;
  cappedBy: CappedOut;
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

/** The bucket of events without `source.user` (not a valid user id: ids are 1–128 characters). */
export const ANONYMOUS = '\u0000anonymous';

/**
 * Drop examples (later ones first, in the window's seeded order) until no bucket holds more than
 * its share of what is left. `isNew`: is this user id in the new-users bucket?
 */
export function applyCaps(examples: Example[], rules: Pick<WindowRequest, 'maxUserShare' | 'maxTenantShare' | 'newUsers'>,
  isNew: (user: string) => boolean = () => false): { kept: Example[]; cappedBy: CappedOut } {
  const dims: Array<[keyof CappedOut, (ex: Example) => string | null, number | undefined]> = [
    ['user', (ex) => ex.user ?? ANONYMOUS, rules.maxUserShare],
    ['tenant', (ex) => ex.tenant, rules.maxTenantShare],
    ['newUsers', (ex) => (ex.user !== null && isNew(ex.user) ? 'new' : null), rules.newUsers?.maxShare],
  ];
  const cappedBy: CappedOut = { user: 0, tenant: 0, newUsers: 0 };
  let kept = examples;
  for (let iter = 0; iter < 64; iter++) {
    const before = kept.length;
    for (const [name, bucket, share] of dims) {
      if (share === undefined || share >= 1) continue;
      const cap = Math.floor(share * kept.length);
      const seen = new Map<string, number>();
      const n0 = kept.length;
      kept = kept.filter((ex) => {
        const who = bucket(ex);
        if (who === null) return true;
        const n = (seen.get(who) ?? 0) + 1;
        seen.set(who, n);
        return n <= cap;
      });
      cappedBy[name] += n0 - kept.length;
    }
    if (kept.length === before) break;
  }
  return { kept, cappedBy };
}

export type WindowStore = ReturnType<typeof createWindowStore>;

export function createWindowStore(db: Db, rounds: RoundStore) {
  const userRows = db.prepare(`SELECT user, first_seen, events FROM users WHERE model = ? AND user IN (SELECT value FROM json_each(?))`);

  /** Which users of these examples are new by the rule (first seen recently, or few events so far). */
  function newUsersOf(req: WindowRequest, examples: Example[]): (user: string) => boolean {
    const rule = req.newUsers;
    if (rule === undefined || rule.maxShare >= 1) return () => false;
    const now = req.now ?? Date.now();
    const users = [...new Set(examples.map((e) => e.user).filter((u): u is string => u !== null))];
    const known = new Map<string, { first_seen: number; events: number }>();
    for (let i = 0; i < users.length; i += 5000) {
      for (const r of userRows.all(req.model, JSON.stringify(users.slice(i, i + 5000))) as Array<{ user: string; first_seen: number; events: number }>) known.set(r.user, r);
    }
    return (user) => {
      const k = known.get(user);
      return k === undefined || k.events < rule.minEvents || now - k.first_seen < rule.minAgeMs;
    };
  }

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
      const { kept, cappedBy } = applyCaps(all, req, newUsersOf(req, all));
      const keptIds = new Set(kept.map((e) => e.id));
      return {
        examples: kept, newCount: fresh.filter((e) => keptIds.has(e.id)).length, replayCount: replay.filter((e) => keptIds.has(e.id)).length,
        cappedOut: all.length - kept.length, cappedBy, maxExampleId: ids.ex, maxEventSeq: ids.ev,
      };
    },
    /** The deterministic held-out split (never trained on), newest first, at most `limit`. */
    heldout(model: string, types: ExampleType[], limit = 1000): Example[] {
      return (db.prepare(`SELECT * FROM examples WHERE model = ? AND heldout = 1 AND type IN (${typeList(types)}) ORDER BY id DESC LIMIT ?`)
        .all(model, limit) as ExampleRow[]).map(toExample);
    },
  };
}
