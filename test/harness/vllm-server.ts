/**
 * A real HTTP server speaking vLLM's runtime-LoRA endpoints, for the faults a real vLLM cannot be
 * made to show on demand (hangs, garbage answers, injected 5xx, routes off, older error shapes);
 * what a real vLLM does is tested against a real one in test-optional/vllm/. Shapes as vLLM 0.32:
 *   GET  /v1/models                 {object: "list", data: [{id, object: "model", created,
 *                                   owned_by, root, parent, max_model_len, permission: [...]}]}
 *   POST /v1/load_lora_adapter      {lora_name, lora_path} → 200 text; 400 already loaded; 500
 *                                   rank above max_lora_rank; 404 "No adapter found"
 *   POST /v1/unload_lora_adapter    {lora_name} → 200 text; 404 unknown
 *   POST /v1/chat/completions       {model, messages, max_tokens} → 200 {choices: [{message}], usage:
 *                                   {completion_tokens}}, the answer naming the model it came from
 *                                   (at most max_tokens words, one word one token); 404 unknown model
 * It reads adapter_config.json from lora_path like vLLM does and records every call.
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
  /** Never answer GET /v1/models or loads (the connection stays open). */
  hang: boolean;
  /** Answer GET /v1/models with this text instead (garbage). */
  modelsBody: string | undefined;
  /** Leave `usage` out of chat completions (a server that does not count tokens). */
  usageOff: boolean;
  /** What a restart does to runtime-loaded adapters: forget them all. */
  restart(): void;
  close(): Promise<void>;
}

/** One /v1/models entry as vLLM 0.32 lists it (~0.5 kB with a registry path as root). */
function modelEntry(id: string, root: string, parent: string | null): Record<string, unknown> {
  const created = Math.floor(Date.now() / 1000);
  return {
    id, object: 'model', created, owned_by: 'vllm', root, parent, max_model_len: 512,
    permission: [{ id: `modelperm-${id.replace(/[^a-z0-9]/gi, '').padEnd(32, '0').slice(0, 32)}`, object: 'model_permission', created, allow_create_engine: false, allow_sampling: true, allow_logprobs: true, allow_search_indices: false, allow_view: true, allow_fine_tuning: false, organization: '*', group: null, is_blocking: false }],
  };
}

export async function startFakeVllm(base = 'tiny-base', maxRank = 16, apiKey?: string): Promise<FakeVllm> {
  const loaded = new Map<string, string>();
  const calls: VllmCall[] = [];
  let failures = 0;
  let failStatus = 500;
  let failShape: 'nested' | 'flat' = 'nested';
  const state = { maxRank, routesOff: false, hang: false, modelsBody: undefined as string | undefined, usageOff: false };
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
      if (state.hang) return; // never answers; the client's deadline must end it
      if (req.method === 'GET' && path === '/v1/models') {
        const data = [modelEntry(base, base, null), ...[...loaded].map(([id, root]) => modelEntry(id, root, base))];
        res.writeHead(200, { 'content-type': 'application/json' }).end(state.modelsBody ?? JSON.stringify({ object: 'list', data }));
        return;
      }
      if (req.method === 'POST' && path === '/v1/chat/completions') {
        const model = String(body?.['model'] ?? '');
        if (model !== base && !loaded.has(model)) return error(res, 404, `The model \`${model}\` does not exist.`, 'NotFoundError');
        const messages = body?.['messages'] as Array<{ content: string }> | undefined;
        const words = `answer of ${model} to ${messages?.at(-1)?.content ?? ''}`.split(' ').slice(0, Number(body?.['max_tokens'] ?? 16));
        const answer = { id: 'chatcmpl-1', object: 'chat.completion', model, choices: [{ index: 0, message: { role: 'assistant', content: words.join(' ') }, finish_reason: 'length' }],
          ...(state.usageOff ? {} : { usage: { prompt_tokens: 8, completion_tokens: words.length, total_tokens: 8 + words.length } }) };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
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
      // vLLM 0.32 answers a rank above --max-lora-rank with 500 (older builds: 400).
      if (r > state.maxRank) return error(res, 500, `LoRA rank ${r} is greater than max_lora_rank ${state.maxRank}.`, 'InternalServerError');
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
    get hang() { return state.hang; }, set hang(v: boolean) { state.hang = v; },
    get modelsBody() { return state.modelsBody; }, set modelsBody(v: string | undefined) { state.modelsBody = v; },
    get usageOff() { return state.usageOff; }, set usageOff(v: boolean) { state.usageOff = v; },
    restart() { loaded.clear(); },
    close: () => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }),
  };
}
