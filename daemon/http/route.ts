/**
 * The one interface through which stages offer HTTP routes (feedback intake, admin actions,
 * status): a route is data — method, path pattern, handler — that the composition root hands to
 * the server (server.ts). A handler answers with `sendJson` and reads a body with `readBody` or
 * `readJsonObject`, which enforce a byte limit.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { AligndError } from '../base/errors.js';
import { redactSecrets } from '../base/redact.js';

export type Handler = (req: IncomingMessage, res: ServerResponse, params: Record<string, string>) => void | Promise<void>;

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Path with `:name` segments, e.g. `/v1/models/:model/approve`. */
  path: string;
  handler: Handler;
  /** Mutating admin routes: require `Authorization: Bearer <token>`. */
  admin?: boolean;
}

/** A JSON answer; secrets in URLs (a target's credentials) never leave in one. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = redactSecrets(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Is this the error `readBody` rejects with when a body is over its limit (answer 413)? */
export const isBodyTooLarge = (err: unknown): boolean => err instanceof AligndError && err.code === 'REQUEST_TOO_LARGE';

/**
 * The whole request body, at most `limit` bytes. Over the limit (declared in Content-Length, or
 * counted while reading) it rejects with REQUEST_TOO_LARGE and drains the rest unread, so the
 * connection can still carry the answer.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (): AligndError => new AligndError('REQUEST_TOO_LARGE', `request body over ${limit} bytes`, { action: 'send a smaller body' });
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > limit) {
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        reject(tooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/**
 * A small JSON-object body (admin actions): empty → {}. Rejects with REQUEST_TOO_LARGE over `limit`
 * (answer 413) and with REQUEST_INVALID when it is not JSON or not an object (answer 400).
 */
export async function readJsonObject(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const raw = (await readBody(req, limit)).toString('utf8');
  if (raw.trim() === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (err) {
    throw new AligndError('REQUEST_INVALID', `body is not JSON: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new AligndError('REQUEST_INVALID', 'body is not a JSON object');
  return v as Record<string, unknown>;
}
