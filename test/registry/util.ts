/** Shared by the promotion and reconcile tests: tiny-model versions, calls seen by the test vLLM server, a webhook receiver, a liveness bound. */
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Registry } from '../../daemon/registry/registry.js';
import { parseModelConfig } from '../../daemon/model/hf-config.js';
import { initLora } from '../../daemon/model/lora.js';
import { writePeftAdapter } from '../../daemon/model/peft.js';
import { TINY_CONFIG } from '../../daemon/model/tiny.js';
import type { VllmCall } from '../harness/vllm-server.js';

export const tmp = (prefix = 'alignd-promote-'): string => mkdtempSync(join(tmpdir(), prefix));
export const fast = { attempts: 4, baseDelayMs: 1, maxDelayMs: 5 };
const spec = parseModelConfig(TINY_CONFIG, 'tiny');

/** `n` versions of the tiny model (rank `r`, q/v), each a distinct adapter. */
export async function addVersions(reg: Registry, n: number, r = 8): Promise<void> {
  for (let i = 0; i < n; i++) {
    const adapter = initLora(spec, { r, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: 'tiny-base' }, 100 + i);
    await reg.addVersion({ write: (d) => writePeftAdapter(d, spec, adapter) }, { parent: reg.latest()?.version ?? null, base_model: { path: 'builtin:tiny', sha256: null } });
  }
}

type Calls = Pick<VllmCall, 'path' | 'body'>[];
export const loads = (calls: Calls) => calls.filter((c) => c.path === '/v1/load_lora_adapter').map((c) => c.body?.['lora_name']);
export const unloads = (calls: Calls) => calls.filter((c) => c.path === '/v1/unload_lora_adapter').map((c) => c.body?.['lora_name']);

/** Settles with `p`, or rejects when `ms` pass first (a liveness bound, not a speed figure). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms); })])
    .finally(() => clearTimeout(timer));
}

/** A webhook receiver that records each POST (body, signature, timestamp) and answers 204; closed in teardown. */
export async function webhookReceiver(t: { teardown(fn: () => unknown): void }): Promise<{ url: string; got: Array<{ body: string; sig: string; ts: string }> }> {
  const got: Array<{ body: string; sig: string; ts: string }> = [];
  const hook = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => { body += c.toString(); });
    req.on('end', () => {
      got.push({ body, sig: String(req.headers['x-alignd-signature']), ts: String(req.headers['x-alignd-timestamp']) });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  t.teardown(() => hook.close());
  return { url: `http://127.0.0.1:${(hook.address() as { port: number }).port}/deploy`, got };
}
