/**
 * The daemon's HTTP server: serves the routes the composition root mounts (route.ts: health,
 * readiness, status, feedback intake, admin actions). Binds to localhost unless configured
 * otherwise.
 *
 * Nothing a client sends may stop the process: the request target is parsed inside a guard (an
 * unparsable one is a 400), every handler runs inside one, and malformed requests that Node's
 * parser refuses are answered 400 on the socket. Every answer carries `nosniff` and a
 * restrictive Content-Security-Policy (a route may set a wider one for its own page).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { sendJson, type Route } from './route.js';

export interface HttpServerOptions {
  host: string;
  port: number;
  routes: Route[];
  log: Logger;
  /** Token for admin routes; when unset they answer 503 (never open by default). */
  adminToken?: string;
}

function match(pattern: string, path: string): Record<string, string> | undefined {
  const p = pattern.split('/');
  const a = path.split('/');
  if (p.length !== a.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < p.length; i++) {
    const seg = p[i] as string;
    const got = a[i] as string;
    if (seg.startsWith(':')) {
      try {
        params[seg.slice(1)] = decodeURIComponent(got);
      } catch {
        return undefined;
      }
    } else if (seg !== got) return undefined;
  }
  return params;
}

/** Headers on every answer: no MIME sniffing, no framing, nothing loaded from elsewhere (JSON needs nothing). */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/** The path of a request target, or undefined when it does not parse (`http://[`). */
function pathOf(target: string | undefined): string | undefined {
  try {
    return new URL(target ?? '/', 'http://localhost').pathname;
  } catch {
    return undefined;
  }
}

/** `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1). */
export function tokenOk(header: string | undefined, token: string): boolean {
  const m = /^bearer +(\S+) *$/i.exec(header ?? '');
  if (m === null) return false;
  const a = Buffer.from(m[1] as string);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function startHttpServer(opts: HttpServerOptions): Promise<Server> {
  const fail = (res: ServerResponse, path: string, method: string | undefined, err: unknown): void => {
    opts.log.error('http handler failed', { method, path, err: errorMessage(err) });
    if (!res.headersSent) sendJson(res, 500, { error: errorMessage(err) });
    else res.destroy();
  };
  const server = createServer((req, res) => {
    // A client that goes away mid-request makes the streams emit 'error': expected, never fatal.
    req.on('error', (err) => opts.log.debug('http request stream error', { err: err.message }));
    res.on('error', (err) => opts.log.debug('http response stream error', { err: err.message }));
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    const path = pathOf(req.url);
    if (path === undefined) {
      sendJson(res, 400, { error: 'the request target is not a valid URL path' });
      return;
    }
    try {
      dispatch(req, res, path);
    } catch (err) {
      fail(res, path, req.method, err);
    }
  });
  function dispatch(req: IncomingMessage, res: ServerResponse, path: string): void {
    let methodMismatch = false;
    for (const route of opts.routes) {
      const params = match(route.path, path);
      if (params === undefined) continue;
      if (route.method !== req.method) {
        methodMismatch = true;
        continue;
      }
      if (route.admin === true) {
        if (opts.adminToken === undefined || opts.adminToken === '') {
          sendJson(res, 503, { error: 'admin API disabled: set ALIGND_ADMIN_TOKEN to enable it' });
          return;
        }
        if (!tokenOk(req.headers.authorization, opts.adminToken)) {
          sendJson(res, 401, { error: 'missing or wrong bearer token (Authorization: Bearer $ALIGND_ADMIN_TOKEN)' });
          return;
        }
      }
      Promise.resolve()
        .then(() => route.handler(req, res, params))
        .catch((err: unknown) => fail(res, path, req.method, err));
      return;
    }
    sendJson(res, methodMismatch ? 405 : 404, { error: methodMismatch ? `method ${req.method} not allowed on ${path}` : `no route ${path}` });
  }
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    opts.log.debug('http client error', { err: err.message, code: err.code });
    // Node's parser refused the request (bad header, bad chunk, oversized head): say so, then close.
    if (socket.writable && err.code !== 'ECONNRESET') {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    } else {
      socket.destroy();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
