/**
 * Raw bytes → a validated feedback event, or a reject with a stable code and a reason a person
 * can act on (the reason travels in the dead-letter record and in HTTP 400 answers).
 */
import { isUtf8 } from 'node:buffer';
import type { z } from 'zod';
import { feedbackEventSchema, KINDS, SCHEMA_ID, type EventLimits, type FeedbackEvent } from './schema.js';
import type { RejectCode } from './sink.js';

export type Validated =
  | { ok: true; event: FeedbackEvent; text: string }
  | { ok: false; code: RejectCode; reason: string; path?: string; eventId?: string };

export interface Validator {
  (bytes: Buffer | string): Validated;
}

/** `now`: the clock `ts` is checked against (tests). */
export function createValidator(limits: EventLimits, now: () => number = Date.now): Validator {
  const schema = feedbackEventSchema(limits);
  const kinds = new Set<string>(KINDS);
  return (input) => {
    const size = typeof input === 'string' ? Buffer.byteLength(input) : input.length;
    if (size > limits.maxEventBytes) {
      return { ok: false, code: 'oversize', reason: `event is ${size} bytes, over the ${limits.maxEventBytes}-byte limit (ingest.limits.maxEventBytes)` };
    }
    // Decoding would silently turn bad bytes into U+FFFD and store text nobody sent.
    if (typeof input !== 'string' && !isUtf8(input)) {
      return { ok: false, code: 'not_json', reason: 'not valid UTF-8 (JSON text must be UTF-8, RFC 8259 §8.1): fix the producer\'s encoding' };
    }
    let value: unknown;
    const text = typeof input === 'string' ? input : input.toString('utf8');
    try {
      value = JSON.parse(text);
    } catch (err) {
      return { ok: false, code: 'not_json', reason: `not JSON: ${(err as Error).message}` };
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      return { ok: false, code: 'schema', reason: 'event must be a JSON object', path: '' };
    }
    const obj = value as Record<string, unknown>;
    const eventId = typeof obj['event_id'] === 'string' ? obj['event_id'].slice(0, 128) : undefined;
    const withId = <T extends object>(r: T): T & { eventId?: string } => (eventId === undefined ? r : { ...r, eventId });
    if (obj['schema'] !== undefined && obj['schema'] !== SCHEMA_ID) {
      return withId({ ok: false as const, code: 'unknown_schema' as const, reason: `schema ${JSON.stringify(obj['schema']).slice(0, 80)} is not ${SCHEMA_ID}`, path: 'schema' });
    }
    if (typeof obj['kind'] !== 'string' || !kinds.has(obj['kind'])) {
      return withId({ ok: false as const, code: 'unknown_kind' as const,
        reason: `kind ${JSON.stringify(obj['kind'] ?? null).slice(0, 80)} is not one of ${KINDS.join(', ')}`, path: 'kind' });
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      const { path, reason } = describeIssues(parsed.error);
      return withId({ ok: false as const, code: 'schema' as const, reason, path });
    }
    const ahead = Date.parse(parsed.data.ts) - now();
    if (ahead > limits.maxFutureSkewS * 1000) {
      return withId({ ok: false as const, code: 'schema' as const, path: 'ts',
        reason: `ts: ${parsed.data.ts} is ${Math.round(ahead / 1000)} s in the future, beyond the ${limits.maxFutureSkewS} s allowed for clock skew (ingest.limits.maxFutureSkewS); check the producer's clock` });
    }
    return { ok: true, event: parsed.data, text };
  };
}

/** First few zod issues as `path: message`, the first issue's path separately. */
function describeIssues(error: z.ZodError): { path: string; reason: string } {
  const issues = error.issues.slice(0, 5);
  const fmt = (p: PropertyKey[]): string => p.map((s) => (typeof s === 'number' ? `[${s}]` : String(s))).join('.').replace(/\.\[/g, '[');
  const reason = issues.map((i) => `${fmt(i.path) || '(event)'}: ${i.message}`).join('; ');
  return { path: fmt(issues[0]?.path ?? []), reason: reason + (error.issues.length > 5 ? `; and ${error.issues.length - 5} more` : '') };
}
