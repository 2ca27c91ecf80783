/**
 * The live signals probation compares, read from feedback events. Each signal is a harm in [0, 1]
 * per observation (higher is worse), so every comparison has one direction and one scale:
 *   down_vote_share     binary feedback:        1 for a down-vote, 0 for an up-vote
 *   mean_rating         rating feedback:        1 − the score normalised by its scale
 *   edit_share          every feedback event:   1 for an edit that changed the response
 *   safety_report_rate  every feedback event:   1 for a safety report
 * `exposure` events are not feedback: they count served responses, the denominator of the
 * per-exposure safety limit.
 */
import type { FeedbackKind } from '../feedback/schema.js';
import type { RolloutMetric } from '../policy/schema.js';
import type { Arm } from '../stats/pairing.js';

/** One stored event as probation sees it (the store's row, without texts). */
export interface ProbationEvent {
  arm: Arm;
  /** When alignd stored it (ms): the clock probation's timeline and max_hours use. */
  at: number;
  kind: FeedbackKind;
  tenant: string | null;
  /** binary */
  label?: 'up' | 'down' | null;
  /** rating, normalised to [0, 1] */
  score?: number | null;
  /** edit: did it change the response? */
  changed?: boolean | null;
  /** exposure */
  count?: number | null;
}

/** The harm of `e` on `metric`, or undefined when the event says nothing about it. */
export function harm(metric: RolloutMetric, e: ProbationEvent): number | undefined {
  if (e.kind === 'exposure') return undefined;
  switch (metric) {
    case 'down_vote_share':
      return e.kind === 'binary' && (e.label === 'up' || e.label === 'down') ? (e.label === 'down' ? 1 : 0) : undefined;
    case 'mean_rating':
      return e.kind === 'rating' && typeof e.score === 'number' ? 1 - Math.min(1, Math.max(0, e.score)) : undefined;
    case 'edit_share':
      return e.kind === 'edit' && e.changed === true ? 1 : 0;
    case 'safety_report_rate':
      return e.kind === 'safety_report' ? 1 : 0;
  }
}

/** How the signal reads for a person: its value is the harm, except the rating (shown as the rating itself). */
export const METRIC_TEXT: Record<RolloutMetric, string> = {
  down_vote_share: 'down-vote share',
  mean_rating: 'mean rating (1 − normalised score, lower is better)',
  edit_share: 'edit share',
  safety_report_rate: 'safety reports per feedback event',
};
