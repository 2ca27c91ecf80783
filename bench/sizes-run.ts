/**
 * One model of `npm run bench:sizes`, in its own process so its memory figures are its own:
 * load, every session a round opens (reference log-probs, generation, the DPO train step, exact
 * KL), reference log-probs of 2 pairs × 256 tokens, 16-token generation, a KL check before the
 * first step (as a round makes), DPO steps with a KL check after step 5. Prints one JSON line.
 *
 *   node dist/bench/sizes-run.js <checkpoint dir> <name> [--steps 10] [--threads 2] [--recompute]
 */
import { performance } from 'node:perf_hooks';
import { f32, i64, initState, trainStep } from '../daemon/engine/index.js';
import { alignModel } from '../daemon/align/context.js';
import { heldoutKl } from '../daemon/align/kl.js';
import { packSequences } from '../daemon/model/packing.js';
import { adapterFromTensors, loadModel, loraHostTensors, packedFeeds } from '../daemon/model/model.js';
import { createRng } from '../daemon/base/random.js';
import { parameterCount } from '../daemon/model/weights.js';
import { arg, median } from './common.js';
import { gb, memory, pssSampler } from './memory.js';

const [dir, name] = process.argv.slice(2);
if (dir === undefined || name === undefined) throw new Error('usage: sizes-run.js <checkpoint dir> <name> [--steps N] [--threads N] [--recompute]');
const steps = Number(arg('steps', '10'));
const threads = Number(arg('threads', '2'));
const recompute = process.argv.includes('--recompute');
const P = 2;
const T = 256;

const sampler = pssSampler();
const t0 = performance.now();
const model = loadModel(dir, { threads });
const lora = { r: 16, loraAlpha: 32, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
const m = alignModel(model, lora);
const loadS = (performance.now() - t0) / 1000;

const optimizer = { maxGradNorm: 1, weightDecay: 0 };
const t1 = performance.now();
await model.session('response_logprobs', null);
await model.session('decode', lora);
const dpo = await m.dpo({ lossType: 'sigmoid', labelSmoothing: 0, rpoAlpha: 0, optimizer, accumulate: false, recompute });
await m.kl(lora, null);
const sessionS = (performance.now() - t1) / 1000;
const afterSessions = memory();

const V = model.spec.vocabSize;
const rng = createRng(7);
const seq = (): { ids: number[]; promptLength: number } => ({ ids: Array.from({ length: T }, () => Math.floor(rng.next() * V)), promptLength: T / 2 });
const pairs = Array.from({ length: 2 * P }, seq);
const batch = packSequences(pairs, model.padId);

let t = performance.now();
const ref = (await model.responseLogprobs(batch, null)).seqLogps;
const logprobsMs = performance.now() - t;

const adapter = m.freshAdapter(1);
t = performance.now();
await model.generate(pairs.slice(0, P).map((s) => s.ids.slice(0, s.promptLength)), { maxNewTokens: 16 }, adapter);
const generateMs = performance.now() - t;

// A round checks KL before its first step, so every session has run (and holds its arena) before step 1.
t = performance.now();
await heldoutKl(m, adapter, null, pairs.slice(0, P), P, T);
const firstKlMs = performance.now() - t;
const afterWarm = memory();

const state = initState(loraHostTensors(adapter));
const feeds = {
  ...packedFeeds(batch), chosen_index: i64([P], [0, 1]), rejected_index: i64([P], [2, 3]),
  ref_chosen: f32([P], ref.slice(0, P)), ref_rejected: f32([P], ref.slice(P)), beta: f32([], [0.1]),
};
const stepMs: number[] = [];
const after: Record<number, ReturnType<typeof memory>> = {};
let klMs = NaN;
for (let s = 1; s <= steps; s++) {
  t = performance.now();
  await trainStep(dpo.session, dpo.info, state, feeds, 1e-4);
  stepMs.push(performance.now() - t);
  after[s] = memory();
  if (s === Math.min(5, steps)) {
    t = performance.now();
    await heldoutKl(m, adapterFromTensors(adapter, state.params), null, pairs.slice(0, P), P, T);
    klMs = performance.now() - t;
  }
}
sampler.stop();
const end = memory();
const last = after[steps]!;
const second = after[Math.min(2, steps)]!;
console.log(JSON.stringify({
  engine: 'alignd', model: name, dtype: 'bf16', params: parameterCount(model.spec), recompute, threads,
  load_s: +loadS.toFixed(2), session_s: +sessionS.toFixed(2), logprobs_ms: Math.round(logprobsMs), generate_ms: Math.round(generateMs),
  first_step_ms: Math.round(stepMs[0]!), step_ms: Math.round(median(stepMs.slice(1).length > 0 ? stepMs.slice(1) : stepMs)), kl_ms: Math.round(klMs),
  first_kl_ms: Math.round(firstKlMs),
  rss_sessions_gb: gb(afterSessions.rssGb), pss_sessions_gb: gb(afterSessions.pssGb), pss_before_steps_gb: gb(afterWarm.pssGb),
  rss_step2_gb: gb(second.rssGb), rss_step10_gb: gb(last.rssGb), pss_step2_gb: gb(second.pssGb), pss_step10_gb: gb(last.pssGb),
  peak_rss_gb: gb(end.peakRssGb), peak_pss_gb: gb(sampler.peak()), steps,
}));
