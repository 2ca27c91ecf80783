/**
 * Scale-out benchmark: the same training round (same window, knobs and seed) on the local engine
 * (onnxruntime in this process) and as a job on a real local Ray head (trainers/trl: TRL + PEFT
 * under alignd's KL guard), on the tiny built-in model and the ~20M-parameter config. Baseline in
 * the same run: the local round. Where the Ray round's time goes: export (window and deployed
 * adapter to the shared directory), submission (the Jobs API call), the job (Ray's scheduling and
 * the Python process: model load, training with the guard's KL checks, adapter save) and the
 * adapter's return (checksums, shapes, finite values). Ray's pip environment is built by a warm-up
 * job first (minutes, once per head) and not counted. Needs the cluster venv (tools/cluster/venv.sh).
 *
 *   npm run bench:scaleout -- [--steps N]
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { alignModel } from '../daemon/align/context.js';
import { runRound } from '../daemon/align/train-round.js';
import { loraConfigFromPolicy, trainingKnobs } from '../daemon/align/knobs.js';
import { policySchema } from '../daemon/policy/schema.js';
import { writeTinyModel } from '../daemon/model/tiny.js';
import { parameterCount } from '../daemon/model/weights.js';
import { trainRemote } from '../daemon/loop/remote-round.js';
import { silentLogger } from '../daemon/base/log.js';
import type { Example } from '../daemon/store/buffer.js';
import { rayTrainer } from '../adapters/trainers/ray.js';
import { clusterVenv, startRayHead } from '../test-optional/cluster/ray-head.js';
import { preferenceEvents } from '../test/align/synthetic.js';
import { arg, writeMidModel } from './common.js';

const steps = Number(arg('steps', '6'));

function examples(n: number, heldout: boolean, seed: number): Example[] {
  return preferenceEvents(n, seed, 0.1, `b${seed}`).map((e, i) => {
    const k = e as unknown as { prompt: Example['prompt']; chosen: string; rejected: string };
    return { id: (heldout ? 10_000 : 0) + i + 1, model: 'bench', type: 'pair', originKind: 'preference', eventSeq: i + 1, eventIds: [e.event_id], prompt: k.prompt,
      chosen: k.chosen, rejected: k.rejected, response: null, label: null, margin: null, category: null, severity: null, user: `u${i % 8}`, tenant: null, heldout };
  });
}

const root = mkdtempSync(join(tmpdir(), 'alignd-bench-scaleout-'));
const ray = await startRayHead(clusterVenv());
try {
  const trainer = rayTrainer({ address: ray.url });
  const window = examples(32, false, 1);
  const heldout = examples(8, true, 2);
  const models: Array<[string, string]> = [['tiny', join(root, 'tiny')], ['mid-20M', join(root, 'mid')]];
  writeTinyModel(models[0]![1]);
  mkdirSync(models[1]![1]);
  writeMidModel(models[1]![1]);
  let warm = false;
  for (const [name, dir] of models) {
    const policy = policySchema.parse({
      model: 'bench', base_model: { path: dir }, lora: { r: 8, alpha: 16, target_modules: ['q_proj', 'v_proj'] },
      objective: { max_steps: steps, batch_size: 8, micro_batch_size: 4, learning_rate: 5e-4 }, kl: { per_round: 1, cumulative: 10 },
      trainer: { kind: 'ray', address: ray.url, poll_s: 0.5, timeout_s: 3600, python: join(ray.venv, 'bin/python'), storage: { path: join(root, 'shared') },
        runtime_env: { pip: warm ? [] : null, env_vars: { HF_HUB_OFFLINE: '1' } } },
    });
    const t0 = performance.now();
    const m = alignModel(dir, loraConfigFromPolicy(policy));
    const local = await runRound({ model: m, deployedAdapter: null, anchorAdapter: null, window, heldout, knobs: trainingKnobs(policy), seed: 1 });
    const localMs = performance.now() - t0;
    const remote = (): ReturnType<typeof trainRemote> => trainRemote({ trainer, policy, m, model: 'bench', round: 1, window, heldout, baseDir: dir,
      deployedAdapterDir: null, anchorAdapterDir: null, outDir: join(root, 'out', name), log: silentLogger });
    if (!warm) {
      const w0 = performance.now();
      await remote(); // builds Ray's pip environment from trainers/trl/requirements.txt
      console.log(JSON.stringify({ bench: 'scaleout.ray_env', first_job_ms: Math.round(performance.now() - w0) }));
      warm = true;
    }
    const r0 = performance.now();
    const r = await remote();
    const rayMs = performance.now() - r0;
    const t = r.remote.timing;
    const jobS = t.job_wall_s;
    console.log(JSON.stringify({
      bench: 'scaleout.round', model: name, params: parameterCount(m.ckpt.spec), steps, pairs: window.length,
      local_ms: Math.round(localMs), local_steps: local.stepsTaken, ray_ms: Math.round(rayMs), ray_steps: r.stepsTaken, ray_over_local: +(rayMs / localMs).toFixed(2),
      ray: { export_ms: t.export_ms, submit_ms: t.submit_ms, job_ms: t.job_ms, return_ms: t.return_ms,
        job_python_load_ms: Math.round((jobS['load'] ?? 0) * 1000), job_train_ms: Math.round((jobS['train'] ?? 0) * 1000), job_save_ms: Math.round((jobS['save'] ?? 0) * 1000),
        job_scheduling_ms: Math.round(t.job_ms - (jobS['total'] ?? 0) * 1000) },
    }));
  }
} finally {
  await ray.stop();
  rmSync(root, { recursive: true, force: true });
}
