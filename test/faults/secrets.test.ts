/**
 * Secrets in server-target urls (basic-auth user and password, query tokens) reach the server and
 * nowhere else: not the target ids, the logs, deployed.json, the audit log nor the deployment API.
 */
import t from 'tap';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { serverTargets } from '../../adapters/servers/index.js';
import { openRegistry } from '../../daemon/registry/registry.js';
import { promote } from '../../daemon/registry/promote.js';
import { gateRoutes } from '../../daemon/release/admin-routes.js';
import { closeServer, startHttpServer } from '../../daemon/http/server.js';
import { createLogger, silentLogger } from '../../daemon/base/log.js';
import { redactSecrets, redactUrl } from '../../daemon/base/redact.js';
import { startFakeVllm } from '../harness/vllm-server.js';

const SECRETS = ['pa55w0rd', 't0ps3cret', 'hunter2'];

t.test('redactUrl keeps the place, drops the secrets', async (t) => {
  t.equal(redactUrl('https://u:p@h.example:8443/a/b?token=x&v=2#f'), 'https://***@h.example:8443/a/b?token=***&v=***#f');
  t.equal(redactUrl('http://gpu-1:8000'), 'http://gpu-1:8000', 'a url without secrets is unchanged');
  t.equal(redactUrl('not a url'), 'not a url');
  t.equal(redactSecrets('push to "http://a:b@h/x?k=1" failed; see http://h/y'), 'push to "http://***@h/x?k=***" failed; see http://h/y');
});

t.test('a webhook and a vLLM target with secrets in their urls: the secrets reach the servers only', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'alignd-secrets-'));
  const seen: Array<{ auth: string | undefined; url: string | undefined }> = [];
  const hook = createServer((req, res) => {
    seen.push({ auth: req.headers.authorization, url: req.url });
    req.resume();
    res.writeHead(500).end('receiver down');
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => hook.close(() => r())));
  const vllm = await startFakeVllm('tiny-base');
  t.teardown(() => vllm.close());
  const hookUrl = `http://hook:pa55w0rd@127.0.0.1:${(hook.address() as AddressInfo).port}/deploy?token=t0ps3cret&v=2`;
  const vllmUrl = vllm.url.replace('http://', 'http://admin:hunter2@');
  const targets = serverTargets([
    { kind: 'webhook', url: hookUrl, secret_env: 'HOOK_SECRET', timeout_s: 5 },
    { kind: 'webhook', url: hookUrl.replace('t0ps3cret', 'other-t0ps3cret'), secret_env: 'HOOK_SECRET', timeout_s: 5 },
    { kind: 'vllm', urls: [vllmUrl], timeout_s: 5 },
  ], { HOOK_SECRET: 'hmac-key' });
  t.same(targets.map((x) => x.id), [
    `webhook:http://***@127.0.0.1:${(hook.address() as AddressInfo).port}/deploy?token=***&v=***`,
    `webhook:http://***@127.0.0.1:${(hook.address() as AddressInfo).port}/deploy?token=***&v=***#2`,
    `vllm:http://***@127.0.0.1:${new URL(vllm.url).port}/`,
  ], 'ids name the urls without their secrets, and stay distinct');

  const reg = openRegistry(root, 'tiny');
  const adapter = join(root, 'src');
  mkdirSync(adapter);
  writeFileSync(join(adapter, 'adapter_config.json'), JSON.stringify({ peft_type: 'LORA', r: 8, lora_alpha: 16, base_model_name_or_path: 'tiny-base', target_modules: ['q_proj'] }));
  writeFileSync(join(adapter, 'adapter_model.safetensors'), Buffer.alloc(64));
  await reg.addVersion({ adapterDir: adapter }, { parent: null, base_model: { path: 'tiny-base', sha256: null } });
  const logs: string[] = [];
  const log = createLogger({}, 'debug', (l) => logs.push(l));
  const r = await promote(reg, 'v1', { targets, reason: 'test', log, retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 2 } });
  t.equal(r.complete, false, 'the webhooks failed (the receiver answers 500)');

  t.equal(seen[0]?.auth, `Basic ${Buffer.from('hook:pa55w0rd').toString('base64')}`, 'the receiver got the basic-auth credentials');
  t.match(seen[0]?.url, /token=t0ps3cret/, 'and its query token');
  t.ok(vllm.calls.some((c) => c.path === '/v1/load_lora_adapter'), 'vLLM was reached through a url with credentials');

  const server = await startHttpServer({ host: '127.0.0.1', port: 0, log: silentLogger, routes: gateRoutes({ registryRoot: root }) });
  t.teardown(() => closeServer(server));
  const api = await (await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/models/tiny/deployment`)).text();
  const places: Record<string, string> = {
    'target ids': targets.map((x) => x.id).join('\n'),
    logs: logs.join('\n'),
    'deployed.json': readFileSync(join(reg.dir, 'deployed.json'), 'utf8'),
    'audit.jsonl': readFileSync(join(reg.dir, 'audit.jsonl'), 'utf8'),
    'GET /v1/models/tiny/deployment': api,
  };
  for (const [where, text] of Object.entries(places)) {
    t.ok(text.length > 0, `${where} is there`);
    for (const s of SECRETS) t.notOk(text.includes(s), `${where} does not contain ${s}`);
  }
  t.match(places['audit.jsonl'], /promote\.partial/, 'the audit still records the failure');
  t.ok(reg.verifyAudit().ok, 'and verifies');
});
