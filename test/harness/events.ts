/**
 * Feedback event factories shared by tests and benches: valid events of every kind, and the
 * bad inputs a producer can send (for DLQ, HTTP 400 and fuzz tests).
 */
import type { FeedbackEvent } from '../../daemon/feedback/schema.js';

export type Kind = FeedbackEvent['kind'];

export function makeEvent(i: number, over: Partial<Record<string, unknown>> & { kind?: Kind } = {}): FeedbackEvent {
  const kind = over.kind ?? (['preference', 'binary', 'rating', 'edit', 'safety_report'] as const)[i % 5]!;
  const base = {
    event_id: `ev-${i}`,
    ts: new Date(Date.UTC(2026, 10, 1) + i * 1000).toISOString(),
    model: 'demo',
    model_version: 'v1',
    source: { user: `u${i % 7}`, tenant: `t${i % 3}`, channel: 'test' },
    prompt: `prompt ${i % 11}`,
  };
  const byKind: Record<Kind, Record<string, unknown>> = {
    preference: { kind: 'preference', chosen: `good answer ${i}`, rejected: `bad answer ${i}` },
    binary: { kind: 'binary', response: `answer ${i}`, label: i % 2 === 0 ? 'up' : 'down' },
    rating: { kind: 'rating', response: `rated answer ${i}`, score: i % 5 + 1, scale: { min: 1, max: 5 } },
    edit: { kind: 'edit', response: `draft ${i}`, edited: `edited draft ${i}` },
    safety_report: { kind: 'safety_report', response: `unsafe answer ${i}`, category: 'violence', severity: 'high' },
    exposure: { kind: 'exposure', count: 100 + i },
  };
  const { kind: _k, ...rest } = over;
  // An exposure is a serving-side count: it has no prompt.
  const { prompt: _p, ...common } = base;
  return { ...(kind === 'exposure' ? common : base), ...byKind[kind], ...rest } as FeedbackEvent;
}

/** A valid event padded to about `bytes` bytes of JSON (benchmarks use ~1 KB). */
export function makeEventOfSize(i: number, bytes: number): string {
  const e = makeEvent(i, { kind: 'preference' });
  const json = JSON.stringify(e);
  const pad = Math.max(0, bytes - json.length - 1);
  return JSON.stringify({ ...e, chosen: (e as { chosen: string }).chosen + ' ' + 'x'.repeat(pad) });
}

/** Inputs that must be refused, each with the reject code alignd gives it. */
export function badInputs(maxEventBytes: number): Array<{ name: string; bytes: Buffer; code: string }> {
  const ok = makeEvent(1, { kind: 'preference' }) as Record<string, unknown>;
  const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
  return [
    { name: 'not json', bytes: Buffer.from('{"event_id": "x", '), code: 'not_json' },
    { name: 'binary garbage', bytes: Buffer.from([0xff, 0xfe, 0x00, 0x01]), code: 'not_json' },
    { name: 'array', bytes: json([1, 2, 3]), code: 'schema' },
    { name: 'unknown kind', bytes: json({ ...ok, event_id: 'bad-kind', kind: 'vibes' }), code: 'unknown_kind' },
    { name: 'missing chosen', bytes: json({ ...ok, event_id: 'bad-missing', chosen: undefined }), code: 'schema' },
    { name: 'wrong type', bytes: json({ ...ok, event_id: 'bad-type', rejected: 42 }), code: 'schema' },
    { name: 'bad model name', bytes: json({ ...ok, event_id: 'bad-model', model: '../etc' }), code: 'schema' },
    { name: 'unknown field', bytes: json({ ...ok, event_id: 'bad-field', chosenn: 'typo' }), code: 'schema' },
    { name: 'other schema', bytes: json({ ...ok, event_id: 'bad-schema', schema: 'alignd.feedback/v9' }), code: 'unknown_schema' },
    { name: 'oversize', bytes: json({ ...ok, event_id: 'bad-big', chosen: 'y'.repeat(maxEventBytes) }), code: 'oversize' },
  ];
}
