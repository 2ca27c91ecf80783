/**
 * The serving engine's evaluation under the gate (daemon/loop/served-evidence.ts servingEvaluation,
 * adapters/servers/vllm-eval.ts) over HTTP against test/harness/vllm-server.ts: the anchor is loaded
 * and answers under its own private name when it is another version than the deployed one (the
 * base's served name when it is the base), answers carry the server's token counts (the gate's
 * length unit), and every private name is unloaded after the gate, also when a load fails.
 * The log-prob side (margins, the KL figure) is measured on a real vLLM in test-optional/cluster.
 */
import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { servingEvaluation } from '../../daemon/loop/served-evidence.js';
import { vllmEngine } from '../../adapters/servers/vllm-eval.js';
import { silentLogger } from '../../daemon/base/log.js';
import type { ModelTokenizer } from '../../daemon/model/tokenizer.js';
import { startFakeVllm } from '../harness/vllm-server.js';

const work = mkdtempSync(join(tmpdir(), 'alignd-served-eval-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));
const adapter = (version: string): { version: string; adapterDir: string } => {
  const dir = join(work, version);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ r: 8 }));
  return { version, adapterDir: dir };
};
// No held-out examples: no log-prob requests, so the tokenizer is never read.
const common = { model: 'm', baseServedName: 'tiny-base', tokenizer: {} as ModelTokenizer, heldout: [], beta: 0.1, topK: 5, klContexts: 0,
  sampling: { maxTokens: 6, temperature: 0.7, topP: 0.95, seed: 7 }, log: silentLogger };

t.test('an anchor other than the deployed version is loaded, answers under its own name, and is unloaded after', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const ev = await servingEvaluation(vllmEngine({ url: vllm.url }), { ...common, candidate: adapter('v3'), deployed: adapter('v2'), anchor: adapter('v1') });
  t.same([...vllm.loaded.keys()].sort(), ['m-eval-v1', 'm-eval-v2', 'm-eval-v3']);
  t.ok(ev.anchor, 'an anchor responder');
  const [c, d, a] = await Promise.all([ev.candidate.respond(['hi there']), ev.deployed.respond(['hi there']), ev.anchor!.respond(['hi there'])]);
  t.same([c![0]!.text, d![0]!.text, a![0]!.text], ['answer of m-eval-v3 to hi there', 'answer of m-eval-v2 to hi there', 'answer of m-eval-v1 to hi there']);
  t.equal(c![0]!.tokens, 6, 'the server\'s token count');
  const long = await ev.candidate.respond(['one two three four five six seven']);
  t.equal(long[0]!.tokens, 6, 'capped at sampling.maxTokens (the gate\'s max_new_tokens)');
  await ev.close();
  t.same([...vllm.loaded.keys()], [], 'every private name unloaded');
});

t.test('an anchor that is the base answers under the base\'s served name, nothing more is loaded; no anchor, no anchor side', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const ev = await servingEvaluation(vllmEngine({ url: vllm.url }), { ...common, candidate: adapter('v3'), deployed: adapter('v2'), anchor: null });
  t.same([...vllm.loaded.keys()].sort(), ['m-eval-v2', 'm-eval-v3']);
  t.equal((await ev.anchor!.respond(['x']))[0]!.text, 'answer of tiny-base to x');
  await ev.close();
  const none = await servingEvaluation(vllmEngine({ url: vllm.url }), { ...common, candidate: adapter('v3'), deployed: null });
  t.equal(none.anchor, undefined);
  t.equal((await none.deployed.respond(['x']))[0]!.text, 'answer of tiny-base to x', 'no deployed version: the base is the reference');
  await none.close();
  t.same([...vllm.loaded.keys()], []);
});

t.test('a failed load unloads what was loaded; a server that reports no token counts is refused by name', async (t) => {
  const vllm = await startFakeVllm();
  t.teardown(() => vllm.close());
  const broken = { version: 'v1', adapterDir: join(work, 'missing') };
  await t.rejects(servingEvaluation(vllmEngine({ url: vllm.url }), { ...common, candidate: adapter('v3'), deployed: adapter('v2'), anchor: broken }),
    { code: 'SERVER_FAILED', message: /m-eval-v1/ });
  t.same([...vllm.loaded.keys()], [], 'candidate and deployed unloaded after the anchor\'s load failed');

  vllm.usageOff = true;
  const ev = await servingEvaluation(vllmEngine({ url: vllm.url }), { ...common, candidate: adapter('v3'), deployed: null });
  await t.rejects(ev.candidate.respond(['x']), { code: 'SERVER_FAILED', message: /usage\.completion_tokens/ });
  await ev.close();
});
