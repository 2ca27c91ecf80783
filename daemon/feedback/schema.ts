/**
 * The feedback event schema `alignd.feedback/v1` — the single source of truth.
 * Producers in other languages get the JSON Schema exported from it (`alignd schema`).
 *
 * Objects are strict: a misspelt field is refused (and dead-lettered with its path) rather than
 * silently dropped. Producers that need extra context put it in `meta` (string → string).
 */
import { z } from 'zod';

export const SCHEMA_ID = 'alignd.feedback/v1';
export const KINDS = ['preference', 'binary', 'rating', 'edit', 'safety_report', 'exposure'] as const;
export type FeedbackKind = (typeof KINDS)[number];

/** Size limits; from the daemon config (`ingest.limits`). */
export interface EventLimits {
  /** Largest accepted message in bytes (UTF-8 JSON as received). */
  maxEventBytes: number;
  /** Longest prompt/response/message text in characters. */
  maxTextChars: number;
  /** Most chat messages in a prompt. */
  maxMessages: number;
  /**
   * How far `ts` may lie ahead of this machine's clock (producers' clock skew), in seconds. A later
   * `ts` is refused: it would become a round's data-window bound and sort after every real event.
   */
  maxFutureSkewS: number;
}

export const defaultLimits: EventLimits = { maxEventBytes: 256 * 1024, maxTextChars: 64 * 1024, maxMessages: 64, maxFutureSkewS: 3600 };

/** Model (policy stream) names double as registry directory names: no path tricks. */
export const MODEL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Idempotency keys: printable ASCII without spaces, at most 128 characters. */
export const EVENT_ID = /^[\x21-\x7e]{1,128}$/;

export function feedbackEventSchema(limits: EventLimits = defaultLimits) {
  const text = z.string().max(limits.maxTextChars);
  const id = z.string().min(1).max(128);
  const message = z.strictObject({
    role: z.enum(['system', 'user', 'assistant', 'tool']),
    content: text,
  });
  const common = {
    schema: z.literal(SCHEMA_ID).optional().describe('Schema id; optional, but when present must be this one'),
    event_id: z.string().regex(EVENT_ID, 'event_id must be 1–128 printable ASCII characters without spaces')
      .describe('Idempotency key: a replayed event with the same id is stored once'),
    ts: z.iso.datetime({ offset: true }).describe('When the feedback was given (ISO 8601 with offset)'),
    model: z.string().regex(MODEL_NAME, 'model must match ' + MODEL_NAME.source).describe('The served policy stream'),
    model_version: z.string().min(1).max(64).describe('Version that produced the response, e.g. "v3"'),
    source: z.strictObject({
      user: id.optional().describe('Hashed user id'),
      tenant: id.optional().describe('Hashed tenant id'),
      channel: id.optional().describe('Where the feedback came from (ui, api, ...)'),
    }),
    meta: z.record(z.string().max(64), z.string().max(1024)).optional(),
  };
  const base = {
    ...common,
    prompt: z.union([text, z.array(message).min(1).max(limits.maxMessages)])
      .describe('Prompt as a string or as chat messages'),
  };
  return z.discriminatedUnion('kind', [
    z.strictObject({ ...base, kind: z.literal('preference'), chosen: text, rejected: text,
      margin: z.number().finite().min(0).max(1000).optional() }),
    z.strictObject({ ...base, kind: z.literal('binary'), response: text, label: z.enum(['up', 'down']) }),
    z.strictObject({ ...base, kind: z.literal('rating'), response: text, score: z.number().finite(),
      scale: z.strictObject({ min: z.number().finite(), max: z.number().finite() }) })
      .refine((e) => e.scale.min < e.scale.max && e.score >= e.scale.min && e.score <= e.scale.max,
        { message: 'score must lie within scale.min..scale.max and min < max', path: ['score'] }),
    z.strictObject({ ...base, kind: z.literal('edit'), response: text, edited: text }),
    z.strictObject({ ...base, kind: z.literal('safety_report'), response: text,
      category: z.string().min(1).max(64), severity: z.enum(['low', 'medium', 'high', 'critical']) }),
    // Reported by the serving side (router, gateway), not by users: how many responses
    // `model_version` served since its previous report. Probation reads per-exposure rates from it.
    z.strictObject({ ...common, kind: z.literal('exposure'),
      count: z.number().int().min(1).max(1e12).describe('Responses this version served since the previous exposure report') }),
  ]);
}

export type FeedbackEvent = z.infer<ReturnType<typeof feedbackEventSchema>>;
/** Events about one response (every kind but `exposure`): they carry a prompt and train. */
export type ResponseFeedback = Exclude<FeedbackEvent, { kind: 'exposure' }>;
export type ChatMessage = { role: 'system' | 'user' | 'assistant' | 'tool'; content: string };
export type Prompt = string | ChatMessage[];

/** The JSON Schema (draft 2020-12) of the event, for producers in other languages. */
export function feedbackJsonSchema(limits: EventLimits = defaultLimits): unknown {
  const schema = z.toJSONSchema(feedbackEventSchema(limits), { unrepresentable: 'any' }) as Record<string, unknown>;
  return { $id: 'urn:alignd:schema:' + SCHEMA_ID, title: SCHEMA_ID, ...schema };
}
