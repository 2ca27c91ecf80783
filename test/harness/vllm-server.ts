/**
 * A real HTTP server speaking vLLM's runtime-LoRA endpoints as vLLM 0.11 does, for tests:
 *   GET  /v1/models                 {object: "list", data: [{id, object: "model", root, parent}]}
 *   POST /v1/load_lora_adapter      {lora_name, lora_path} → 200 text; 400 already loaded / rank
 *                                   too high; 404 "No adapter found" when the path lacks an adapter
 *   POST /v1/unload_lora_adapter    {lora_name} → 200 text; 404 unknown
 * It reads adapter_config.json from lora_path like vLLM does, records every call, and fails on
 * demand (status, error-body shape) or with the runtime routes switched off.
 */
import { createServer, type Server } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface VllmCall { method: string; path: string; body: Record<string, unknown> | undefined }

export interface FakeVllm {
  url: string;
  base: string;
  loaded: Map<string, string>;
  calls: VllmCall[];
  /** Fail the next `n` load calls with `status` (error body nested as current vLLM, or flat as older builds). */
  failLoads(n: number, status?: number, shape?: 'nested' | 'flat'): void;
  maxRank: number;
  routesOff: boolean;
  close(): Promise<void>;
}

export async function startFakeVllm(base = 'tiny-base', maxRank = 16, apiKey?: string): Promise<FakeVllm> {
  const loaded = new Map<string, string>();
  const calls: VllmCall[] = [];
  let failures = 0;
  let failStatus = 500;
  let failShape: 'nested' | 'flat' = 'nested';
  const state = { maxRank, routesOff: false };
  const error = (res: import('node:http').ServerResponse, status: number, message: string, type = 'BadRequestError', shape: 'nested' | 'flat' = 'nested'): void => {
    const body = shape === 'nested' ? { error: { message, type, param: null, code: status } } : { object: 'error', message, type, param: null, code: status };
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };
  const server: Server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => { raw += c.toString(); });
    req.on('end', () => {
      const body = raw === '' ? undefined : (JSON.parse(raw) as Record<string, unknown>);
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      calls.push({ method: req.method ?? '', path, body });
      // vllm serve --api-key: every /v1 route wants the bearer token.
      if (apiKey !== undefined && req.headers.authorization !== `Bearer ${apiKey}`) {
        res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'Unauthorized' }));
        return;
      }
      if (req.method === 'GET' && path === '/v1/models') {
        const data = [{ id: base, object: 'model', root: base, parent: null }, ...[...loaded].map(([id, root]) => ({ id, object: 'model', root, parent: base }))];
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data }));
        return;
      }
      if (state.routesOff || req.method !== 'POST' || (path !== '/v1/load_lora_adapter' && path !== '/v1/unload_lora_adapter')) {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ detail: 'Not Found' }));
        return;
      }
      const name = String(body?.['lora_name'] ?? '');
      if (path === '/v1/unload_lora_adapter') {
        if (!loaded.has(name)) return error(res, 404, `The lora adapter '${name}' cannot be found.`, 'NotFoundError');
        loaded.delete(name);
        res.writeHead(200, { 'content-type': 'text/plain' }).end(`Success: LoRA adapter '${name}' removed successfully.`);
        return;
      }
      if (failures > 0) {
        failures--;
        return error(res, failStatus, 'engine is busy (injected failure)', 'InternalServerError', failShape);
      }
      if (loaded.has(name)) return error(res, 400, `The lora adapter '${name}' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.`, 'InvalidUserInput');
      const lp = String(body?.['lora_path'] ?? '');
      const cfgPath = join(lp, 'adapter_config.json');
      if (!existsSync(cfgPath)) return error(res, 404, `No adapter found for ${lp}`, 'NotFoundError');
      const r = (JSON.parse(readFileSync(cfgPath, 'utf8')) as { r: number }).r;
      if (r > state.maxRank) return error(res, 400, `LoRA rank ${r} is greater than max_lora_rank ${state.maxRank}.`);
      loaded.set(name, lp);
      res.writeHead(200, { 'content-type': 'text/plain' }).end(`Success: LoRA adapter '${name}' added successfully.`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${addr.port}`, base, loaded, calls,
    failLoads(n, status = 500, shape = 'nested') { failures = n; failStatus = status; failShape = shape; },
    get maxRank() { return state.maxRank; }, set maxRank(v: number) { state.maxRank = v; },
    get routesOff() { return state.routesOff; }, set routesOff(v: boolean) { state.routesOff = v; },
    close: () => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }),
  };
}
