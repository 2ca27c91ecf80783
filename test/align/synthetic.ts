/**
 * A synthetic gold preference for learning tests (the gold-RM setup of Gao et al. 2022, in
 * miniature): responses are short letter strings; the hidden rule scores a response by the share
 * of its non-space characters that are 'a'. Preference events are written
 * into a real replay buffer (SQLite) and come back as training windows and held-out examples.
 */
import type { FeedbackEvent } from '../../daemon/feedback/schema.js';
import { createRng, type Rng } from '../../daemon/base/random.js';
import type { ReplayBuffer } from '../../daemon/store/buffer.js';

export const MODEL = 'tiny';

export function gold(text: string): number {
  const chars = [...text].filter((c) => c !== ' ');
  if (chars.length === 0) return 0;
  let s = 0;
  for (const c of chars) s += c === 'a' ? 1 : 0;
  return s / chars.length;
}

const LETTERS = 'abcdefghijklmnopqrstuvwxyz';

function word(rng: Rng, pA: number): string {
  const n = 3 + Math.floor(rng.next() * 4);
  let w = '';
  for (let i = 0; i < n; i++) {
    const u = rng.next();
    w += u < pA ? 'a' : LETTERS[1 + Math.floor(rng.next() * 25)]!;
  }
  return w;
}

export function response(rng: Rng): string {
  const pA = 0.5 * rng.next();
  const words = 2 + Math.floor(rng.next() * 2);
  return Array.from({ length: words }, () => word(rng, pA)).join(' ');
}

export function prompt(rng: Rng): string {
  return `Write ${['something', 'a line', 'a word', 'letters'][Math.floor(rng.next() * 4)]} ${Math.floor(rng.next() * 100)}`;
}

/** Preference events whose chosen side has the higher gold score, each flipped with `noise`. */
export function preferenceEvents(n: number, seed: number, noise: number, idPrefix: string): FeedbackEvent[] {
  const rng = createRng(seed);
  const out: FeedbackEvent[] = [];
  while (out.length < n) {
    const p = prompt(rng);
    const a = response(rng);
    const b = response(rng);
    if (Math.abs(gold(a) - gold(b)) < 0.1) continue;
    let [chosen, rejected] = gold(a) > gold(b) ? [a, b] : [b, a];
    if (rng.next() < noise) [chosen, rejected] = [rejected, chosen];
    out.push({
      event_id: `${idPrefix}-${out.length}`, ts: '2026-11-27T12:00:00Z', model: MODEL, model_version: 'v1',
      source: { user: `u${out.length % 50}` }, prompt: p, kind: 'preference', chosen, rejected,
    });
  }
  return out;
}

export function ingest(buffer: ReplayBuffer, events: FeedbackEvent[]): void {
  buffer.insertEvents(events.map((event, i) => ({ event, origin: { source: 'file' as const, file: 'synthetic', line: i + 1 } })));
  buffer.deriveAll();
}
