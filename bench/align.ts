/**
 * Alignment benchmark (CPU provider unless --ep): DPO train-step throughput — one session.run doing
 * forward over 2P sequences, the sigmoid DPO loss against cached reference log-probs, backward to
 * the LoRA parameters, clipping and AdamW — on the tiny built-in model and on a ~20M-parameter
 * Llama config (same shape as bench:model's). Baseline in the same run: the forward log-prob pass
 * over the same tokens with the same adapter (the program that computes reference log-probs);
 * step_over_forward is their ratio (≈ 3 is the usual ideal for full backprop, 6N against 2N FLOPs
 * per token (Kaplan et al. 2020); LoRA with frozen weights skips the weight-gradient GEMMs, ≈ 4N,
 * so 2–2.5 is expected). Last line is the JSON
 * summary for the ~20M config.
 *
 *   npm run bench:align -- [--ep cpu|webgpu|cuda] [--threads N] [--iters N]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { f32, i64, initState, trainStep } from '../daemon/engine/index.js';
import { packLogProbBatch } from '../daemon/model/batch.js';
import { batchFeeds, loadModel, loraHostTensors } from '../daemon/model/model.js';
import { initLora } from '../daemon/model/lora.js';
import { createRng } from '../daemon/base/random.js';
import { writeTinyModel } from '../daemon/model/tiny.js';
import { parameterCount } from '../daemon/model/weights.js';
import { arg, median, provider as providerArg, timeMs, writeMidModel } from './common.js';
import { alignModel } from '../daemon/align/context.js';

const provider = providerArg();
const threads = Number(arg('threads', '0'));
const iters = Number(arg('iters', '5'));



interface Figures { name: string; params: number; pairs: number; tokens: number; stepMs: number; forwardMs: number }

async function measure(name: string, dir: string, P: number, T: number): Promise<Figures> {
  const model = loadModel(dir, { provider, threads });
  const ckpt = model.checkpoint;
  const lora = { r: 16, loraAlpha: 32, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
  const m = alignModel(model, lora);
  const adapter = initLora(ckpt.spec, lora, 1);
  const rng = createRng(2);
  for (const p of adapter.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.01, 0.01);
  const V = ckpt.spec.vocabSize;
  const seqs = Array.from({ length: 2 * P }, () => ({ ids: Array.from({ length: T }, () => Math.floor(rng.next() * V)), promptLength: T / 4 }));
  const batch = packLogProbBatch(seqs, model.padId);
  const ref = (await model.logprobs(batch, adapter)).seqLogps;
  const prog = await m.dpo({ lossType: 'sigmoid', labelSmoothing: 0, rpoAlpha: 0, optimizer: { maxGradNorm: 1, weightDecay: 0 }, accumulate: false });
  const state = initState(loraHostTensors(adapter));
  const feeds = {
    ...batchFeeds(batch), chosen_index: i64([P], Array.from({ length: P }, (_, i) => i)), rejected_index: i64([P], Array.from({ length: P }, (_, i) => P + i)),
    ref_chosen: f32([P], ref.slice(0, P)), ref_rejected: f32([P], ref.slice(P)), beta: f32([], [0.1]),
  };
  // Interleave the two measurements so machine noise hits both alike.
  const stepMs: number[] = [];
  const fwdMs: number[] = [];
  for (let round = 0; round < 3; round++) {
    stepMs.push(await timeMs(() => trainStep(prog.session, prog.info, state, feeds, 1e-5), iters));
    fwdMs.push(await timeMs(() => model.logprobs(batch, adapter), iters));
  }
  return { name, params: parameterCount(ckpt.spec), pairs: P, tokens: 2 * P * T, stepMs: median(stepMs), forwardMs: median(fwdMs) };
}

function line(f: Figures): Record<string, number | string> {
  return {
    model: f.name, params: f.params, pairs_per_step: f.pairs, tokens_per_step: f.tokens,
    step_ms: +f.stepMs.toFixed(2), forward_ms: +f.forwardMs.toFixed(2),
    pairs_per_s: +(f.pairs / (f.stepMs / 1000)).toFixed(2), tokens_per_s: +(f.tokens / (f.stepMs / 1000)).toFixed(1),
    step_over_forward: +(f.stepMs / f.forwardMs).toFixed(3),
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
  console.log(JSON.stringify({
    bench: 'align', pairs_per_s: l['pairs_per_s'], tokens_per_s: l['tokens_per_s'], step_over_forward: l['step_over_forward'],
    rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
  }));
} finally {
  rmSync(root, { recursive: true, force: true });
}
