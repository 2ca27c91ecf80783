/**
 * Training examples derived from feedback events:
 *   preference    → pair (chosen ≻ rejected)
 *   edit          → pair (edited ≻ response) and an SFT target (edited)
 *   binary        → KTO example; plus a pair when the same prompt has an up and a down
 *   rating        → pairs by score within a prompt
 *   safety_report → a safety label (unsafe, category, severity)
 *   exposure      → nothing (a serving-side count of responses, read by probation)
 * These functions are pure: the buffer supplies earlier events of the same prompt.
 */
import type { FeedbackEvent, Prompt } from './schema.js';

export type ExampleType = 'pair' | 'kto' | 'sft' | 'safety';

export interface ExampleDraft {
  type: ExampleType;
  originKind: FeedbackEvent['kind'];
  eventIds: string[];
  prompt: Prompt;
  chosen?: string;
  rejected?: string;
  response?: string;
  label?: 'up' | 'down' | 'unsafe';
  margin?: number;
  category?: string;
  severity?: string;
}

/** An earlier event of the same model, prompt and held-out side, as the buffer keeps it. */
export interface PromptPeer {
  seq: number;
  eventId: string;
  response: string;
  label?: 'up' | 'down';
  /** Rating score normalised to [0, 1]. */
  score?: number;
}

/** Most rating pairs one new rating makes (with the most recent peers): bounds work per event. */
export const MAX_RATING_PAIRS = 8;

export function normalisedScore(e: Extract<FeedbackEvent, { kind: 'rating' }>): number {
  return (e.score - e.scale.min) / (e.scale.max - e.scale.min);
}

/** Examples that need no other event. */
export function deriveOwn(e: FeedbackEvent): ExampleDraft[] {
  const ids = [e.event_id];
  switch (e.kind) {
    case 'preference':
      return [{ type: 'pair', originKind: e.kind, eventIds: ids, prompt: e.prompt, chosen: e.chosen, rejected: e.rejected,
        ...(e.margin === undefined ? {} : { margin: e.margin }) }];
    case 'edit':
      if (e.edited === e.response) return [{ type: 'sft', originKind: e.kind, eventIds: ids, prompt: e.prompt, response: e.edited }];
      return [
        { type: 'pair', originKind: e.kind, eventIds: ids, prompt: e.prompt, chosen: e.edited, rejected: e.response },
        { type: 'sft', originKind: e.kind, eventIds: ids, prompt: e.prompt, response: e.edited },
      ];
    case 'binary':
      return [{ type: 'kto', originKind: e.kind, eventIds: ids, prompt: e.prompt, response: e.response, label: e.label }];
    case 'rating':
      return [];
    case 'safety_report':
      return [{ type: 'safety', originKind: e.kind, eventIds: ids, prompt: e.prompt, response: e.response, label: 'unsafe',
        category: e.category, severity: e.severity }];
    case 'exposure':
      return []; // a serving-side count: it trains nothing (probation reads it)
  }
}

/**
 * The pair a binary event makes with the oldest unpaired opposite label on the same prompt
 * (each binary event joins at most one pair, so n ups and n downs give n pairs, not n²).
 * An up and a down on the very same response is conflicting feedback, not a preference.
 */
export function pairBinary(e: Extract<FeedbackEvent, { kind: 'binary' }>, peers: PromptPeer[]): { draft: ExampleDraft; peer: PromptPeer } | undefined {
  const peer = peers.find((p) => p.label !== undefined && p.label !== e.label && p.response !== e.response);
  if (peer === undefined) return undefined;
  const [chosen, rejected] = e.label === 'up' ? [e.response, peer.response] : [peer.response, e.response];
  return { peer, draft: { type: 'pair', originKind: 'binary', eventIds: [peer.eventId, e.event_id], prompt: e.prompt, chosen, rejected } };
}

/** Pairs of a new rating with earlier ratings of the same prompt; margin = normalised score gap. */
export function pairRatings(e: Extract<FeedbackEvent, { kind: 'rating' }>, peers: PromptPeer[]): ExampleDraft[] {
  const s = normalisedScore(e);
  const out: ExampleDraft[] = [];
  for (const p of peers) {
    if (out.length >= MAX_RATING_PAIRS) break;
    if (p.score === undefined || p.score === s || p.response === e.response) continue;
    const mine = s > p.score;
    out.push({ type: 'pair', originKind: 'rating', eventIds: [p.eventId, e.event_id], prompt: e.prompt,
      chosen: mine ? e.response : p.response, rejected: mine ? p.response : e.response, margin: Math.abs(s - p.score) });
  }
  return out;
}
