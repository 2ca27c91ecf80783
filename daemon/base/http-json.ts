/**
 * Small fetch helpers shared by the adapters that speak HTTP (servers, trainers): deadlines,
 * bodies read whole up to a bound, and excerpts of bodies for error messages (only messages are
 * cut, never what is parsed).
 */
import { AligndError } from './errors.js';

/**
 * Largest body alignd reads from a server. A vLLM `/v1/models` entry is ~0.5 kB, so this holds
 * tens of thousands of adapters; past it the server is not what the policy says it is.
 */
export const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** Longest piece of a body quoted in an error message. */
export const EXCERPT_CHARS = 2000;

/**
 * fetch with the adapter's timeout, also cancelled by `signal` (promotion's deadline or shutdown).
 * A url's `user:password@` (fetch refuses urls with credentials) becomes an `Authorization: Basic`
 * header (RFC 7617), unless the caller set one.
 */
export async function fetchWithTimeout(url: string, init: RequestInit, timeoutMs: number, signal?: AbortSignal): Promise<Response> {
  const timeout = AbortSignal.timeout(timeoutMs);
  const u = new URL(url);
  const headers = new Headers(init.headers);
  if (u.username !== '' || u.password !== '') {
    if (!headers.has('authorization')) {
      const cred = `${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`;
      headers.set('authorization', `Basic ${Buffer.from(cred, 'utf8').toString('base64')}`);
    }
    u.username = '';
    u.password = '';
  }
  return fetch(u, { ...init, headers, signal: signal === undefined ? timeout : AbortSignal.any([timeout, signal]) });
}

/** The whole body as text, refused past `limit` bytes (streamed, so an endless body cannot fill memory). */
export async function readBody(res: Response, what: string, limit = MAX_BODY_BYTES): Promise<string> {
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > limit) {
    await res.body?.cancel();
    throw new AligndError('SERVER_FAILED', `${what}: body of ${declared} bytes exceeds alignd's limit of ${limit}`, { action: 'is the url the server the policy means?' });
  }
  if (res.body === null) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw new AligndError('SERVER_FAILED', `${what}: body exceeds alignd's limit of ${limit} bytes`, { action: 'is the url the server the policy means?' });
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A body for an error message: read whole (bounded), quoted up to EXCERPT_CHARS. */
export async function errorBody(res: Response, what: string): Promise<string> {
  try {
    return excerpt(await readBody(res, what));
  } catch (err) {
    return `(body unreadable: ${(err as Error).message})`;
  }
}

export function excerpt(text: string, max = EXCERPT_CHARS): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}
