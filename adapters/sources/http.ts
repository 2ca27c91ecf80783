/**
 * HTTP feedback intake: `POST /v1/feedback` with one JSON event (`Content-Type: application/json`),
 * or an NDJSON batch (`Content-Type: application/x-ndjson`, one event per line). Any other media
 * type, or none, is refused with 415: the CORS-safelisted types (text/plain, form encodings) are
 * what a web page can post cross-site without a preflight, so they must never be taken.
 *
 * Answers only after the durable write (a large batch is stored in slices, the event loop free
 * between them):
 *   202 every event taken (stored or duplicate);
 *   400 some lines refused — the rest of the batch IS stored, and the answer counts the refused
 *       lines and lists the first MAX_LISTED with code, zod path and reason (retrying the whole
 *       batch is safe: idempotent);
 *   409 every refusal is a conflict: an event_id stored already with other content;
 *   413 body over http.maxBodyBytes, or a single event over ingest.limits.maxEventBytes;
 *   415 not application/json or application/x-ndjson;
 *   503 the buffer could not write (nothing acknowledged; retry later).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FeedbackSink, IngestOutcome, RawFeedback } from '../../daemon/feedback/sink.js';
import { isBodyTooLarge, readBody, sendJson, type Route } from '../../daemon/http/route.js';
import type { Logger } from '../../daemon/base/log.js';

export interface HttpFeedbackOptions {
  sink: FeedbackSink;
  maxBodyBytes: number;
  maxEventBytes: number;
  log: Logger;
}

/** Split NDJSON into non-empty lines, keeping 1-based line numbers (newlines found natively: a 16 MB body in milliseconds). */
export function splitLines(body: Buffer): Array<{ line: number; bytes: Buffer }> {
  const out: Array<{ line: number; bytes: Buffer }> = [];
  for (let start = 0, line = 1; start <= body.length; line++) {
    const nl = body.indexOf(0x0a, start);
    let end = nl === -1 ? body.length : nl;
    if (end > start && body[end - 1] === 0x0d) end--;
    let k = start;
    while (k < end && (body[k] === 0x20 || body[k] === 0x09)) k++;
    if (k < end) out.push({ line, bytes: body.subarray(start, end) });
    if (nl === -1) break;
    start = nl + 1;
  }
  return out;
}

/** Refused lines listed in an answer; the rest are only counted (a 16 MB body of `{}` lines must not answer 47 MB). */
export const MAX_LISTED = 100;

/** `application/json` → one event, `application/x-ndjson` → a batch, anything else → undefined. */
export function bodyKind(contentType: string | undefined): 'json' | 'ndjson' | undefined {
  const media = (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
  return media === 'application/json' ? 'json' : media === 'application/x-ndjson' ? 'ndjson' : undefined;
}

export function feedbackRoute(opts: HttpFeedbackOptions): Route {
  return {
    method: 'POST',
    path: '/v1/feedback',
    handler: async (req: IncomingMessage, res: ServerResponse) => {
      const kind = bodyKind(req.headers['content-type']);
      if (kind === undefined) {
        req.resume();
        sendJson(res, 415, { error: `Content-Type ${JSON.stringify(req.headers['content-type'] ?? null)} is not taken: send application/json (one event) or application/x-ndjson (one event per line)` });
        return;
      }
      let body: Buffer;
      try {
        body = await readBody(req, opts.maxBodyBytes);
      } catch (err) {
        if (isBodyTooLarge(err)) {
          sendJson(res, 413, { error: `request body over ${opts.maxBodyBytes} bytes (http.maxBodyBytes): split the batch` });
          return;
        }
        throw err;
      }
      const ndjson = kind === 'ndjson';
      const lines = ndjson ? splitLines(body) : [{ line: 1, bytes: body }];
      if (!ndjson && body.length > opts.maxEventBytes) {
        sendJson(res, 413, { error: `event is ${body.length} bytes, over the ${opts.maxEventBytes}-byte limit (ingest.limits.maxEventBytes)` });
        return;
      }
      if (lines.length === 0) {
        sendJson(res, 400, { error: 'empty body: send one JSON event, or NDJSON with Content-Type: application/x-ndjson' });
        return;
      }
      const batch: RawFeedback[] = lines.map((l) => ({ bytes: l.bytes, origin: { source: 'http', line: l.line } }));
      let outcomes: IngestOutcome[];
      try {
        outcomes = await opts.sink.ingestInSlices(batch);
      } catch (err) {
        opts.log.error('feedback write failed; answered 503', { err: (err as Error).message, events: batch.length });
        sendJson(res, 503, { error: (err as Error).message, retry: true });
        return;
      }
      let stored = 0;
      let duplicates = 0;
      let refused = 0;
      let conflicts = 0;
      const rejected: Array<{ line: number; code: string; path?: string; reason: string; event_id?: string }> = [];
      outcomes.forEach((o, i) => {
        if (o.status === 'stored') stored++;
        else if (o.status === 'duplicate') duplicates++;
        else {
          refused++;
          if (o.code === 'conflict') conflicts++;
          if (rejected.length < MAX_LISTED) {
            rejected.push({ line: (lines[i] as { line: number }).line, code: o.code, reason: o.reason,
              ...(o.path === undefined ? {} : { path: o.path }), ...(o.eventId === undefined ? {} : { event_id: o.eventId }) });
          }
        }
      });
      if (refused === 0) return sendJson(res, 202, { stored, duplicates, rejected });
      const answer = { stored, duplicates, rejected_count: refused, rejected,
        ...(refused > rejected.length ? { note: `first ${rejected.length} of ${refused} refused lines listed; fix those and send the batch again (taken lines are deduplicated)` } : {}) };
      if (conflicts === refused) sendJson(res, 409, answer);
      else if (!ndjson && rejected[0]?.code === 'oversize') sendJson(res, 413, answer);
      else sendJson(res, 400, answer);
    },
  };
}
