/**
 * Attention and RMSNorm kernels of the forward-only programs (issue 18 item 2), on the ~20M Llama
 * config (6 query / 2 kv heads of 64): the packed response log-prob program over rows of several
 * lengths, and sampled KV-cache generation on bench:model's shape (8 prompts of 16–44 tokens, 32 new
 * tokens), each on the composite kernels (MatMul, bias Add, Softmax; Mul/ReduceMean), on
 * GroupQueryAttention and on MultiHeadAttention (both with SimplifiedLayerNormalization). The
 * three run alternately, `--rounds` times; the lines give medians and each fused kind's speed-up
 * over the composite in the same run — what `fusedKernelsFor` (model/forward-graph.ts) is chosen by.
 *
 *   npm run bench:kernels -- [--ep cpu|webgpu|cuda] [--threads 2] [--rounds 7] [--lengths 128x8,512x4,1600x2]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Session, run } from '../daemon/engine/index.js';
import { createRng } from '../daemon/base/random.js';
import type { ForwardKernels } from '../daemon/model/forward-graph.js';
import { initLora, type LoraConfig } from '../daemon/model/lora.js';
import { loadModel, loraFeeds, packedFeeds } from '../daemon/model/model.js';
import { packSequences } from '../daemon/model/packing.js';
import { arg, generateOn, kernelsSession, median, provider as providerArg, writeMidModel } from './common.js';

const KINDS: readonly ForwardKernels[] = ['composite', 'group-query', 'multi-head'];
const provider = providerArg();
const threads = Number(arg('threads', '2'));
const rounds = Number(arg('rounds', '7'));
const lengths = arg('lengths', '128x8,512x4,1600x2').split(',').map((s) => s.split('x').map(Number) as [number, number]);

const root = mkdtempSync(join(tmpdir(), 'alignd-bench-kernels-'));
try {
  writeMidModel(root, { max_position_embeddings: 4096 });
  const model = loadModel(root, { provider, threads });
  const lora: LoraConfig = { r: 16, loraAlpha: 32, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
  const adapter = initLora(model.spec, lora, 1);
  const rng = createRng(2);
  for (const p of adapter.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.01, 0.01);
  const adapterFeeds = loraFeeds(adapter);
  const sessions = async (kind: 'response_logprobs' | 'decode'): Promise<Session[]> =>
    Promise.all(KINDS.map((kernels) => kernelsSession(model, kind, lora, kernels)));
  /** Median ms of `work(i)` for each kind, the kinds alternating round by round. */
  const alternate = async (work: (i: number) => Promise<unknown>): Promise<number[]> => {
    const ms: number[][] = KINDS.map(() => []);
    for (let i = 0; i < KINDS.length; i++) await work(i); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < KINDS.length; i++) {
        const t0 = performance.now();
        await work(i);
        ms[i]!.push(performance.now() - t0);
      }
    }
    return ms.map(median);
  };
  const print = (what: Record<string, number | string>, tokens: number, ms: number[]): void => {
    const line: Record<string, number | string> = { bench: 'kernels', provider, threads, ...what, tokens };
    KINDS.forEach((k, i) => { line[`${k}_ms`] = +ms[i]!.toFixed(1); });
    KINDS.slice(1).forEach((k, i) => { line[`${k}_speedup`] = +(ms[0]! / ms[i + 1]!).toFixed(3); });
    console.log(JSON.stringify(line));
  };

  const forward = await sessions('response_logprobs');
  const V = model.spec.vocabSize;
  for (const [length, rows] of lengths) {
    const seqs = Array.from({ length: rows }, () => ({ ids: Array.from({ length }, () => Math.floor(rng.next() * V)), promptLength: Math.floor(length / 4) }));
    const feeds = { ...packedFeeds(packSequences(seqs, model.padId)), ...adapterFeeds };
    print({ program: 'response_logprobs', rows, length }, rows * length, await alternate((i) => run(forward[i]!, feeds)));
  }
  const decode = await sessions('decode');
  const prompts = Array.from({ length: 8 }, (_, b) => Array.from({ length: 16 + 4 * b }, () => Math.floor(rng.next() * V)));
  const genOpts = { maxNewTokens: 32, sampling: { temperature: 1, topP: 0.95 }, seed: 1 };
  print({ program: 'decode', rows: 8, new_tokens: 32 }, 8 * 32,
    await alternate((i) => generateOn(decode[i]!, model, prompts, genOpts, adapterFeeds)));
  model.close();
} finally {
  rmSync(root, { recursive: true, force: true });
}
