/**
 * Model benchmark (CPU provider unless --ep): batched response log-prob throughput and KV-cache
 * generation tokens/s on the tiny built-in model and on a ~20M-parameter Llama config made with
 * the tiny generator's machinery (written to a temp dir and loaded through the same loader).
 *
 * Baselines measured in the same run: generation without a KV cache (recomputing the whole
 * prefix with the logits program each token) gives the cache's speed-up; on the tiny model, the
 * plain-TS reference forward gives the log-prob program's speed-up. Last line is the JSON summary
 * for the ~20M config.
 *
 *   npm run bench:model -- [--ep cpu|webgpu|cuda] [--threads N] [--iters N]
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { type LogProbBatch, packLogProbBatch } from '../daemon/model/batch.js';
import { type Model, loadModel } from '../daemon/model/model.js';
import { initLora, type LoraAdapter } from '../daemon/model/lora.js';
import { referenceBatchLogProbs } from '../daemon/model/reference-forward.js';
import { createRng } from '../daemon/base/random.js';
import { writeTinyModel } from '../daemon/model/tiny.js';
import { parameterCount } from '../daemon/model/weights.js';
import { arg, provider as providerArg, timeMs, writeMidModel } from './common.js';

const provider = providerArg();
const threads = Number(arg('threads', '0'));
const iters = Number(arg('iters', '5'));



/** B random sequences of T tokens, the first quarter prompt. */
function randomBatch(model: Model, B: number, T: number, seed: number): LogProbBatch {
  const rng = createRng(seed);
  const V = model.tokenizer!.vocabSize;
  const seqs = Array.from({ length: B }, () => ({ ids: Array.from({ length: T }, () => Math.floor(rng.next() * V)), promptLength: T / 4 }));
  return packLogProbBatch(seqs, model.padId);
}

function adapterFor(model: Model): LoraAdapter {
  const a = initLora(model.spec, { r: 16, loraAlpha: 32, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null }, 1);
  const rng = createRng(2);
  for (const p of a.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.01, 0.01);
  return a;
}

interface Figures { logprobTokensPerS: number; genTokensPerS: number; noCacheGenTokensPerS: number }

async function measure(label: string, model: Model, B: number, T: number, newTokens: number): Promise<Figures> {
  const adapter = adapterFor(model);
  const batch = randomBatch(model, B, T, 3);
  const lpMs = await timeMs(() => model.logprobs(batch, adapter), iters);
  const logprobTokensPerS = (B * T) / (lpMs / 1000);
  console.log(`${label}: log-probs B=${B} T=${T} LoRA r=16 on q,k,v,o: ${lpMs.toFixed(1)} ms/batch, ${logprobTokensPerS.toFixed(0)} tokens/s`);

  const prompts = Array.from({ length: B }, (_, b) => Array.from(batch.inputIds.subarray(b * T, b * T + 16 + 4 * b)));
  const opts = { maxNewTokens: newTokens, sampling: { temperature: 1, topP: 0.95 }, seed: 1 };
  const genMs = await timeMs(() => model.generate(prompts, opts, adapter), Math.max(1, Math.floor(iters / 2)));
  const genTokensPerS = (B * newTokens) / (genMs / 1000);
  console.log(`${label}: generation B=${B} prompts 16..${16 + 4 * (B - 1)} tokens, ${newTokens} new: ${genMs.toFixed(1)} ms, ${genTokensPerS.toFixed(0)} tokens/s (KV cache)`);

  // Baseline: the same rows without a cache (the logits program over the whole growing prefix), greedy.
  const noCache = async (steps: number): Promise<void> => {
    const rows = prompts.map((p) => [...p]);
    for (let s = 0; s < steps; s++) {
      const L = Math.max(...rows.map((r) => r.length));
      const ids = new Int32Array(B * L).fill(model.padId);
      const mask = new Float32Array(B * L);
      rows.forEach((r, b) => { ids.set(r, b * L); mask.fill(1, b * L, b * L + r.length); });
      const logits = await model.logits({ batch: B, length: L, inputIds: ids, attentionMask: mask }, adapter);
      const V = model.spec.vocabSize;
      rows.forEach((r, b) => {
        const off = (b * L + r.length - 1) * V;
        let best = 0;
        for (let v = 1; v < V; v++) if (logits[off + v]! > logits[off + best]!) best = v;
        r.push(best);
      });
    }
  };
  await noCache(1); // warm-up
  const t0 = performance.now();
  await noCache(newTokens);
  const ncMs = performance.now() - t0;
  const noCacheGenTokensPerS = (B * newTokens) / (ncMs / 1000);
  console.log(`${label}: generation without KV cache (baseline, same run): ${ncMs.toFixed(1)} ms, ${noCacheGenTokensPerS.toFixed(0)} tokens/s; KV cache ${(genTokensPerS / noCacheGenTokensPerS).toFixed(2)}× faster`);
  return { logprobTokensPerS, genTokensPerS, noCacheGenTokensPerS };
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'alignd-bench-model-'));
  try {
    console.log(`provider ${provider}, threads ${threads === 0 ? 'default' : threads}, iters ${iters}`);
    const tinyDir = join(root, 'tiny');
    writeTinyModel(tinyDir);
    const tiny = loadModel(tinyDir, { provider, threads });
    console.log(`tiny: ${parameterCount(tiny.spec)} parameters`);
    await measure('tiny', tiny, 8, 128, 32);
    // Reference forward (plain TS) on a smaller batch: the log-prob program's speed-up.
    const small = randomBatch(tiny, 2, 64, 5);
    const refRuns: number[] = [];
    for (let i = 0; i < 2; i++) { // the first run includes JIT warm-up
      const t0 = performance.now();
      referenceBatchLogProbs(tiny.checkpoint, small);
      refRuns.push(performance.now() - t0);
    }
    const refMs = Math.min(...refRuns);
    const onnxMs = await timeMs(() => tiny.logprobs(small), iters);
    console.log(`tiny: log-probs B=2 T=64, base: ONNX ${onnxMs.toFixed(2)} ms vs TS reference forward ${refMs.toFixed(1)} ms (${(refMs / onnxMs).toFixed(0)}× faster)`);

    const midDir = join(root, 'mid');
    mkdirSync(midDir);
    writeMidModel(midDir);
    const mid = loadModel(midDir, { provider, threads });
    const params = parameterCount(mid.spec);
    console.log(`llama-20m: ${params} parameters (d ${mid.spec.hiddenSize}, ${mid.spec.numLayers} layers, ${mid.spec.numHeads}/${mid.spec.numKvHeads} heads, vocab ${mid.spec.vocabSize})`);
    const f = await measure('llama-20m', mid, 8, 256, 32);
    const rssMb = process.memoryUsage().rss / 2 ** 20;
    console.log(JSON.stringify({
      bench: 'model', logprob_tokens_per_s: Math.round(f.logprobTokensPerS), gen_tokens_per_s: Math.round(f.genTokensPerS),
      params, rss_mb: Math.round(rssMb),
    }));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
