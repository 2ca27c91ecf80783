/**
 * Alignment benchmark (CPU provider unless --ep): DPO train-step throughput — one session.run doing
 * forward over 2P sequences, the sigmoid DPO loss against cached reference log-probs, backward to
 * the LoRA parameters, clipping and AdamW — on the tiny built-in model and on a ~20M-parameter
 * Llama config (same shape as bench:model's). Baseline in the same run: the forward log-prob pass
 * over the same packed tokens with the same adapter (the program that computes reference log-probs);
 * step_over_forward is their ratio (≈ 3 is the usual ideal for full backprop, 6N against 2N FLOPs
 * per token (Kaplan et al. 2020); LoRA with frozen weights skips the weight-gradient GEMMs, ≈ 4N,
 * so 2–2.5 is expected). forward_composite_ms: the same forward on the composite attention and
 * RMSNorm kernels (the model's programs use onnxruntime's fused ones, model/forward-graph.ts).
 *
 * Then the realistic line (bench/realistic.ts): the production-chat workload, and the PyTorch + PEFT /
 * TRL baseline on the same batches when .cache/venv-baseline exists (tools/dpo-baseline; flags
 * --realistic-iters 2, --realistic-pairs 8, --micro-pairs 2, --export DIR, --profile, --no-baseline).
 *
 * Also the micro-batch trainer's two ways to make a step of one micro-batch: the one-program train
 * step, and the accumulate path (a gradProgram run, then an applyProgram run) every step of k > 1
 * micro-batches takes; accumulate_over_step is their ratio. The knobs, programs and feeds are the
 * round's own (a default policy with this LoRA shape, its DPO objective). Last line is the JSON
 * summary for the ~20M config.
 *
 * Prepacking is the engine's choice for each model (on for both here, see daemon/engine/README.md);
 * `--prepacking on|off` forces it. step_cpu_ms is the mean CPU time of a train step (all threads).
 *
 *   npm run bench:align -- [--ep cpu|webgpu|cuda] [--threads N] [--iters N] [--prepacking on|off]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { accumulate, applyAccumulated, initAccumulator, initState, run, trainStep } from '../daemon/engine/index.js';
import { packSequences } from '../daemon/model/packing.js';
import { loadModel, loraFeeds, loraHostTensors, packedFeeds } from '../daemon/model/model.js';
import { initLora } from '../daemon/model/lora.js';
import { createRng } from '../daemon/base/random.js';
import { writeTinyModel } from '../daemon/model/tiny.js';
import { parameterCount } from '../daemon/model/weights.js';
import { policySchema } from '../daemon/policy/schema.js';
import { arg, kernelsSession, median, provider as providerArg, timeCpuMs, timeMs, writeMidModel } from './common.js';
import { alignModel } from '../daemon/align/context.js';
import { loraConfigFromPolicy, trainingKnobs } from '../daemon/align/knobs.js';
import { dpoTraining, optimizerOf } from '../daemon/align/objectives.js';
import { baselineAvailable, compareWithBaseline, realistic } from './realistic.js';

const provider = providerArg();
const threads = Number(arg('threads', '0'));
const iters = Number(arg('iters', '5'));
const prepackArg = arg('prepacking', 'engine');
if (!['on', 'off', 'engine'].includes(prepackArg)) throw new Error(`--prepacking on|off, got ${prepackArg}`);

interface Figures {
  name: string; params: number; pairs: number; tokens: number; stepMs: number; stepCpuMs: number; forwardMs: number; forwardCompositeMs: number;
  accumulateMs: number; prepacking: boolean;
}

async function measure(name: string, dir: string, P: number, T: number): Promise<Figures> {
  const model = loadModel(dir, { provider, threads, ...(prepackArg === 'engine' ? {} : { prepacking: prepackArg === 'on' }) });
  const ckpt = model.checkpoint;
  const policy = policySchema.parse({
    model: 'bench', base_model: { path: dir }, lora: { r: 16, alpha: 32, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] },
    objective: { batch_size: P, micro_batch_size: P, max_length: T },
  });
  const k = trainingKnobs(policy);
  if (k.objective.kind !== 'dpo') throw new Error('the default policy trains DPO');
  const m = alignModel(model, loraConfigFromPolicy(policy));
  const adapter = initLora(ckpt.spec, m.lora, 1);
  const rng = createRng(2);
  for (const p of adapter.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.01, 0.01);
  const V = ckpt.spec.vocabSize;
  const seq = () => ({ ids: Array.from({ length: T }, () => Math.floor(rng.next() * V)), promptLength: T / 4 });
  const rows = Array.from({ length: 2 * P }, seq);
  const pairs = Array.from({ length: P }, (_, i) => ({ id: i, chosen: rows[i]!, rejected: rows[P + i]! }));
  const dpo = dpoTraining({ model: m, deployed: adapter, knobs: k }, k.objective);
  const feeds = await dpo.feeds(pairs, await dpo.referenceLogps(pairs), k.beta);
  const batch = packSequences(rows, model.padId);
  const one = await dpo.program(false);
  const grad = await dpo.program(true);
  const apply = await m.apply(optimizerOf(k));
  const state = initState(loraHostTensors(adapter));
  const accumulated = async (): Promise<unknown> => {
    const acc = initAccumulator(state);
    await accumulate(grad.session, grad.info, state, acc, feeds);
    return applyAccumulated(apply.session, apply.info, state, acc, 1e-5);
  };
  // Interleave the measurements so machine noise hits them alike.
  const stepMs: number[] = [];
  const stepCpuMs: number[] = [];
  const accMs: number[] = [];
  const fwdMs: number[] = [];
  // The same forward on the composite attention/RMSNorm kernels (the model's programs use the fused ones).
  const composite = await kernelsSession(model, 'response_logprobs', m.lora, 'composite');
  const compositeFeeds = { ...packedFeeds(batch), ...loraFeeds(adapter) };
  const fwdCompositeMs: number[] = [];
  for (let round = 0; round < 3; round++) {
    const step = await timeCpuMs(() => trainStep(one.session, one.info, state, feeds, 1e-5), iters);
    stepMs.push(step.wall);
    stepCpuMs.push(step.cpu);
    accMs.push(await timeMs(accumulated, iters));
    fwdMs.push(await timeMs(() => model.responseLogprobs(batch, adapter), iters));
    fwdCompositeMs.push(await timeMs(() => run(composite, compositeFeeds), iters));
  }
  return {
    name, params: parameterCount(ckpt.spec), pairs: P, tokens: 2 * P * T, stepMs: median(stepMs), stepCpuMs: median(stepCpuMs), forwardMs: median(fwdMs), forwardCompositeMs: median(fwdCompositeMs),
    accumulateMs: median(accMs), prepacking: model.runtime.prepacking ?? false,
  };
}

function line(f: Figures): Record<string, number | string> {
  return {
    model: f.name, params: f.params, pairs_per_step: f.pairs, tokens_per_step: f.tokens, prepacking: f.prepacking ? 'on' : 'off',
    step_ms: +f.stepMs.toFixed(2), step_cpu_ms: +f.stepCpuMs.toFixed(2), forward_ms: +f.forwardMs.toFixed(2),
    pairs_per_s: +(f.pairs / (f.stepMs / 1000)).toFixed(2), tokens_per_s: +(f.tokens / (f.stepMs / 1000)).toFixed(1),
    step_over_forward: +(f.stepMs / f.forwardMs).toFixed(3),
    forward_composite_ms: +f.forwardCompositeMs.toFixed(2), fused_forward_speedup: +(f.forwardCompositeMs / f.forwardMs).toFixed(3),
    accumulate_ms: +f.accumulateMs.toFixed(2), accumulate_over_step: +(f.accumulateMs / f.stepMs).toFixed(3),
  };
}

const root = mkdtempSync(join(tmpdir(), 'alignd-bench-align-'));
try {
  writeTinyModel(join(root, 'tiny'));
  const tiny = await measure('tiny', join(root, 'tiny'), 8, 64);
  console.log(JSON.stringify({ bench: 'align.model', provider, ...line(tiny) }));
  const midDir = join(root, 'mid');
  (await import('node:fs')).mkdirSync(midDir);
  writeMidModel(midDir);
  const mid = await measure('mid-20M', midDir, 4, 128);
  const l = line(mid);
  console.log(JSON.stringify({ bench: 'align.model', provider, ...l }));
  // The production-chat workload and the PyTorch + PEFT / TRL baseline on the same batches (bench/realistic.ts, issue 18).
  const out = arg('export', join(root, 'realistic'));
  const r = await realistic(out, { provider, threads, iters: Number(arg('realistic-iters', '2')), pairs: Number(arg('realistic-pairs', '8')), microPairs: Number(arg('micro-pairs', '2')), seed: 18, profile: process.argv.includes('--profile') });
  console.log(JSON.stringify({ bench: 'align.realistic', provider, ...r }));
  const ours = { fixed: mid.tokens / (mid.stepMs / 1000), logprobs: mid.tokens / (mid.forwardMs / 1000), realistic: Number(r['tokens_per_s']), generation: Number(r['gen_tokens_per_s']) };
  if (baselineAvailable() && !process.argv.includes('--no-baseline')) compareWithBaseline(out, threads || 2, ours);
  console.log(JSON.stringify({
    bench: 'align', pairs_per_s: l['pairs_per_s'], tokens_per_s: l['tokens_per_s'], step_over_forward: l['step_over_forward'],
    accumulate_over_step: l['accumulate_over_step'], prepacking: l['prepacking'], step_cpu_ms: l['step_cpu_ms'],
    rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
  }));
} finally {
  rmSync(root, { recursive: true, force: true });
}
