/**
 * The daemon's HTTP server: serves the routes the composition root mounts (route.ts: health,
 * readiness, status, feedback intake, admin actions). Binds to localhost unless configured
 * otherwise.
 */
import { createServer, type Server } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
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
