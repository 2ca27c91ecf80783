/**
 * Simulated users giving live feedback on two served versions (a canary and its baseline), for
 * probation's tests, the e2e canary test and `npm run bench:canary`. Each event picks a version
 * (the canary with probability `canaryWeight`), a kind from the feedback mix, and an outcome
 * from that version's behaviour: its down-vote share, rating, edit share and safety-report share.
 * `toFeedbackEvent` turns one into a real alignd.feedback/v1 event.
 */
import { createRng } from '../../daemon/base/random.js';
import type { FeedbackEvent } from '../../daemon/feedback/schema.js';
import type { ProbationEvent } from '../../daemon/canary/signals.js';
import type { Arm } from '../../daemon/stats/pairing.js';

export interface VersionBehaviour {
  /** P(down) for binary feedback. */
  downShare: number;
  /** Mean normalised rating in [0, 1] (ratings 1..5, drawn around it). */
  rating: number;
  /** P(kind = edit that changed the response) among feedback events. */
  editShare: number;
  /** P(kind = safety_report) among feedback events. */
  safetyShare: number;
}

export const TYPICAL: VersionBehaviour = { downShare: 0.2, rating: 0.7, editShare: 0.05, safetyShare: 0.005 };

export interface LiveUsersOptions {
  seed: number;
  canary: VersionBehaviour;
  baseline: VersionBehaviour;
  /** Share of traffic (and so of feedback) on the canary. */
  canaryWeight: number;
  /** Of the feedback that is neither an edit nor a safety report: the binary share (the rest are ratings). */
  binaryShare?: number;
  tenants?: string[];
  /** Per tenant, a behaviour override for the canary (a regression that hits one tenant). */
  canaryByTenant?: Record<string, VersionBehaviour>;
  /** ms between events (the `at` clock). */
  everyMs?: number;
  startAt?: number;
}

export function liveUsers(o: LiveUsersOptions): () => ProbationEvent {
  const rng = createRng(o.seed);
  const binaryShare = o.binaryShare ?? 0.75;
  let at = o.startAt ?? 0;
  return () => {
    at += o.everyMs ?? 1000;
    const arm: Arm = rng.next() < o.canaryWeight ? 'canary' : 'baseline';
    const tenant = o.tenants === undefined ? null : o.tenants[Math.floor(rng.next() * o.tenants.length)]!;
    const b = arm === 'canary' ? (tenant !== null ? o.canaryByTenant?.[tenant] : undefined) ?? o.canary : o.baseline;
    const u = rng.next();
    if (u < b.safetyShare) return { arm, at, tenant, kind: 'safety_report' };
    if (u < b.safetyShare + b.editShare) return { arm, at, tenant, kind: 'edit', changed: true };
    if (rng.next() < binaryShare) return { arm, at, tenant, kind: 'binary', label: rng.next() < b.downShare ? 'down' : 'up' };
    // Ratings on 1..5 around the version's mean: mean ± one step with equal chance, clipped.
    const centre = 1 + 4 * b.rating;
    const score = Math.min(5, Math.max(1, Math.round(centre + (rng.next() < 0.5 ? -1 : 1) * rng.next())));
    return { arm, at, tenant, kind: 'rating', score: (score - 1) / 4 };
  };
}

/** One simulated event as a real feedback event of `model` at `version`. */
export function toFeedbackEvent(e: ProbationEvent, model: string, version: string, id: string): FeedbackEvent {
  // A prompt of its own: live feedback on distinct questions pairs into no training examples.
  const base = { event_id: id, ts: new Date().toISOString(), model, model_version: version, prompt: `question ${id}`,
    source: { user: `user-${id.length % 13}`, ...(e.tenant === null ? {} : { tenant: e.tenant }), channel: 'live' } };
  switch (e.kind) {
    case 'binary': return { ...base, kind: 'binary', response: 'an answer', label: e.label === 'down' ? 'down' : 'up' };
    case 'rating': return { ...base, kind: 'rating', response: 'an answer', score: 1 + 4 * (e.score ?? 0), scale: { min: 1, max: 5 } };
    case 'edit': return { ...base, kind: 'edit', response: 'an answer', edited: 'a better answer' };
    case 'safety_report': return { ...base, kind: 'safety_report', response: 'an answer', category: 'harm', severity: 'high' };
    default: throw new Error(`liveUsers makes no ${e.kind} events`);
  }
}
