/**
 * The daemon's HTTP server: health, readiness, status and the routes the composition root mounts
 * (feedback intake, admin actions). Binds to localhost unless configured otherwise.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import type { Logger } from '../base/log.js';

export type Handler = (req: IncomingMessage, res: ServerResponse, params: Record<string, string>) => void | Promise<void>;

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Path with `:name` segments, e.g. `/v1/models/:model/approve`. */
  path: string;
  handler: Handler;
  /** Mutating admin routes: require `Authorization: Bearer <token>`. */
  admin?: boolean;
}

export interface HttpServerOptions {
  host: string;
  port: number;
  routes: Route[];
  log: Logger;
  /** Token for admin routes; when unset they answer 503 (never open by default). */
  adminToken?: string;
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
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

function tokenOk(header: string | undefined, token: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  if (m === null) return false;
  const a = Buffer.from(m[1] as string);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function startHttpServer(opts: HttpServerOptions): Promise<Server> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    let methodMismatch = false;
    for (const route of opts.routes) {
      const params = match(route.path, url.pathname);
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
        .catch((err: unknown) => {
          opts.log.error('http handler failed', { method: req.method, path: url.pathname, err: (err as Error).message });
          if (!res.headersSent) sendJson(res, 500, { error: (err as Error).message });
          else res.destroy();
        });
      return;
    }
    sendJson(res, methodMismatch ? 405 : 404, { error: methodMismatch ? `method ${req.method} not allowed on ${url.pathname}` : `no route ${url.pathname}` });
  });
  server.on('clientError', (err, socket) => {
    opts.log.debug('http client error', { err: err.message });
    socket.destroy();
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
