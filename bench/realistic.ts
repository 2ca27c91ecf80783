/**
 * bench:align's realistic line (issue 18): DPO steps on the ~20M model over the production-chat
 * workload (bench/workload.ts), as a round makes them — micro-batches of `microPairs` pairs, each
 * one packed batch (daemon/model/packing.ts), gradients accumulated, one clipped AdamW update —
 * with the forward log-prob pass over the same packed batches as the baseline (step_over_forward),
 * KV-cache generation on bench:model's shape, and the share of processed tokens that were padding.
 * The forward pass and generation also run on the composite attention/RMSNorm kernels in the same
 * run (fused_forward_speedup, fused_gen_speedup: what onnxruntime's fused kernels give).
 *
 * The checkpoint and the exact batches go to DIR/model and DIR/workload.json (`--export DIR`, else a
 * temp dir); when .cache/venv-baseline exists, tools/dpo-baseline/dpo.py runs the same
 * configurations through PyTorch + PEFT (SDPA) and TRL's DPOTrainer; ratio lines follow
 * (alignd / baseline tokens/s, the bar of issue 18).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { accumulate, applyAccumulated, initAccumulator, initState, run } from '../daemon/engine/index.js';
import { alignModel } from '../daemon/align/context.js';
import { loraConfigFromPolicy, trainingKnobs } from '../daemon/align/knobs.js';
import { dpoTraining, optimizerOf } from '../daemon/align/objectives.js';
import { packedBatch } from '../daemon/align/policy-logps.js';
import { createRng } from '../daemon/base/random.js';
import { initLora, type LoraAdapter } from '../daemon/model/lora.js';
import type { PackedBatch } from '../daemon/model/packing.js';
import { loadModel, loraFeeds, loraHostTensors, packedFeeds } from '../daemon/model/model.js';
import { buildProgram } from '../daemon/model/inference-programs.js';
import type { Provider } from '../daemon/engine/sessions.js';
import { policySchema } from '../daemon/policy/schema.js';
import { generateOn, kernelsSession, median, timeMs, writeMidModel } from './common.js';
import { chatWorkload, type WorkloadParams, workloadPairs, workloadRows } from './workload.js';
import { profileStep } from './profile.js';

export interface RealisticOptions {
  provider: Provider; threads: number; iters: number;
  /** Pairs per optimizer step and per micro-batch. */
  pairs: number; microPairs: number; seed: number;
  /** Write an onnxruntime profile of one step and print the top ops. */
  profile: boolean;
  /** The checkpoint and workload (default: the mid-20M config with room for 2600 positions, the chat workload). */
  writeModel?: (dir: string) => void;
  workload?: (vocabSize: number) => WorkloadParams;
  /** The model's name in the line. */
  name?: string;
}

/** The fixed-length configuration of the mid-20M line and bench:model's generation shape, for the baseline. */
export const FIXED = { pairs: 4, length: 128, prompt: 32 };
export const GENERATION = { batch: 8, promptMin: 16, promptStep: 4, newTokens: 32, temperature: 1, topP: 0.95 };
const LORA = { r: 16, alpha: 32, target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] };
const BETA = 0.1;

const peakRssMb = (): number => Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) / 1024;

function randomAdapter(spec: Parameters<typeof initLora>[0], lora: Parameters<typeof initLora>[1]): LoraAdapter {
  const adapter = initLora(spec, lora, 1);
  const rng = createRng(2);
  for (const p of adapter.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.01, 0.01);
  return adapter;
}

/**
 * Measure the realistic line (and generation). `out` gets the checkpoint (model/: the mid config with
 * room for 2600 positions) and the batches (workload.json) the baseline reads.
 */
export async function realistic(out: string, o: RealisticOptions): Promise<Record<string, number | string>> {
  const dir = join(out, 'model');
  mkdirSync(dir, { recursive: true });
  (o.writeModel ?? ((d) => writeMidModel(d, { max_position_embeddings: 4096 })))(dir);
  const model = loadModel(dir, { provider: o.provider, threads: o.threads });
  const work = (o.workload ?? chatWorkload)(model.spec.vocabSize);
  const maxLength = work.prompt.max + work.response.max;
  const policy = policySchema.parse({
    model: 'bench', base_model: { path: dir }, lora: LORA,
    objective: { batch_size: o.pairs, micro_batch_size: o.microPairs, max_length: maxLength, beta: BETA },
  });
  const k = trainingKnobs(policy);
  if (k.objective.kind !== 'dpo') throw new Error('the default policy trains DPO');
  const m = alignModel(model, loraConfigFromPolicy(policy));
  const adapter = randomAdapter(model.spec, m.lora);
  const pairs = workloadPairs(o.pairs, o.seed, work);
  const { chosen, rejected } = workloadRows(pairs);
  const rows = pairs.map((_, i) => ({ id: i, chosen: chosen[i]!, rejected: rejected[i]! }));
  const micro = Array.from({ length: Math.ceil(o.pairs / o.microPairs) }, (_, j) => rows.slice(j * o.microPairs, (j + 1) * o.microPairs));
  const dpo = dpoTraining({ model: m, deployed: null, knobs: k }, k.objective);
  const ref = await dpo.referenceLogps(rows);
  const feeds: Awaited<ReturnType<typeof dpo.feeds>>[] = [];
  for (const mb of micro) feeds.push(await dpo.feeds(mb, ref, BETA));
  // The batches dpo.feeds packed: real tokens are the sequences' own (what the baseline counts), processed what the rows hold.
  const batches = micro.map((mb) => packedBatch(m, [...mb.map((r) => r.chosen), ...mb.map((r) => r.rejected)], k.maxLength));
  const pad = packedTokens(batches);

  const grad = await dpo.program(true);
  const apply = await m.apply(optimizerOf(k));
  const state = initState(loraHostTensors(adapter));
  const step = async (session = grad.session): Promise<unknown> => {
    const acc = initAccumulator(state);
    for (const f of feeds) await accumulate(session, grad.info, state, acc, f);
    return applyAccumulated(apply.session, apply.info, state, acc, 1e-5);
  };
  const forward = async (): Promise<void> => { for (const b of batches) await model.responseLogprobs(b, adapter); };
  // The same forward-only programs on the composite kernels (issue 18 item 2: before/after in one run).
  const compositeLogps = await kernelsSession(model, 'response_logprobs', m.lora, 'composite');
  const adapterFeeds = loraFeeds(adapter);
  const forwardComposite = async (): Promise<void> => { for (const b of batches) await run(compositeLogps, { ...packedFeeds(b), ...adapterFeeds }); };
  const stepMs: number[] = [];
  const fwdMs: number[] = [];
  const fwdCompositeMs: number[] = [];
  for (let round = 0; round < 2; round++) {
    stepMs.push(await timeMs(step, o.iters));
    fwdMs.push(await timeMs(forward, o.iters));
    fwdCompositeMs.push(await timeMs(forwardComposite, o.iters));
  }
  const peak = peakRssMb();

  const G = GENERATION;
  const rng = createRng(3);
  const prompts = Array.from({ length: G.batch }, (_, b) => Array.from({ length: G.promptMin + G.promptStep * b }, () => Math.floor(rng.next() * model.spec.vocabSize)));
  const genOpts = { maxNewTokens: G.newTokens, sampling: { temperature: G.temperature, topP: G.topP }, seed: 1 };
  const compositeDecode = await kernelsSession(model, 'decode', m.lora, 'composite');
  const generateComposite = (): Promise<number[][]> => generateOn(compositeDecode, model, prompts, genOpts, adapterFeeds);
  const genRuns: number[] = [];
  const genCompositeRuns: number[] = [];
  for (let round = 0; round < 2; round++) {
    genRuns.push(await timeMs(() => model.generate(prompts, genOpts, adapter), o.iters));
    genCompositeRuns.push(await timeMs(generateComposite, o.iters));
  }
  const genMs = median(genRuns);
  const genCompositeMs = median(genCompositeRuns);

  writeFileSync(join(out, 'workload.json'), JSON.stringify({
    lora: LORA, beta: BETA, lr: 1e-5, max_grad_norm: k.maxGradNorm, fixed: FIXED, generation: { ...G, prompts },
    realistic: { micro_pairs: o.microPairs, pairs: pairs.map((p) => ({ prompt: p.prompt, chosen: p.chosen, rejected: p.rejected })), pad_id: model.padId,
      ref_logps: rows.map((r) => ref.get(r.id)!) },
  }));
  const S = median(stepMs);
  const F = median(fwdMs);
  const line: Record<string, number | string> = {
    model: o.name ?? 'mid-20M', workload: o.workload === undefined ? 'chat' : 'custom', pairs_per_step: o.pairs, micro_batch_pairs: o.microPairs,
    real_tokens: pad.real, processed_tokens: pad.processed, padding_tokens: pad.padding, padding_share: +(pad.padding / pad.processed).toFixed(3),
    rows: batches.reduce((n, b) => n + b.rows, 0), longest: Math.max(...batches.map((b) => b.length)), mean_prompt: Math.round(pairs.reduce((s, p) => s + p.prompt.length, 0) / pairs.length),
    step_ms: Math.round(S), forward_ms: Math.round(F), step_over_forward: +(S / F).toFixed(3),
    tokens_per_s: +(pad.real / (S / 1000)).toFixed(1), processed_tokens_per_s: +(pad.processed / (S / 1000)).toFixed(1),
    forward_tokens_per_s: +(pad.real / (F / 1000)).toFixed(1), peak_rss_mb: Math.round(peak),
    gen_tokens_per_s: +((G.batch * G.newTokens) / (genMs / 1000)).toFixed(1),
    // Forward-only programs on fused attention/RMSNorm (the default) against the composite kernels.
    forward_composite_ms: Math.round(median(fwdCompositeMs)), fused_forward_speedup: +(median(fwdCompositeMs) / F).toFixed(3),
    gen_composite_tokens_per_s: +((G.batch * G.newTokens) / (genCompositeMs / 1000)).toFixed(1), fused_gen_speedup: +(genCompositeMs / genMs).toFixed(3),
  };
  if (o.profile) {
    Object.assign(line, await profileStep(grad.info.graph, model.runtime, (session) => step(session)));
    // Where a fused forward's time goes (the reference / evaluation log-prob pass over the same batches).
    const fwd = await profileStep(buildProgram('response_logprobs', model.weights, m.lora), model.runtime,
      async (session) => { for (const b of batches) await run(session, { ...packedFeeds(b), ...adapterFeeds }); });
    line['profile_forward_kernel_ms'] = fwd['profile_kernel_ms']!;
    line['profile_forward_top_ops'] = fwd['profile_top_ops']!;
  }
  return line;
}

/** Real tokens (the sequences'), processed tokens (rows × length) and padding of packed batches. */
export function packedTokens(batches: readonly PackedBatch[]): { processed: number; real: number; padding: number } {
  let processed = 0, real = 0, padding = 0;
  for (const b of batches) {
    processed += b.rows * b.length;
    real += b.realTokens;
    for (const s of b.segmentIds) if (s === -1) padding++;
  }
  return { processed, real, padding };
}

const root = fileURLToPath(new URL('../..', import.meta.url));
export const baselinePython = join(root, '.cache', 'venv-baseline', 'bin', 'python');

/**
 * Run tools/dpo-baseline/dpo.py on an exported directory; print its lines and the ratios alignd /
 * baseline against issue 18's bar. `ours` holds alignd's tokens/s by configuration.
 */
export function compareWithBaseline(dir: string, threads: number, ours: Record<string, number>): void {
  const out = execFileSync(baselinePython, [join(root, 'tools', 'dpo-baseline', 'dpo.py'), dir, '--threads', String(threads)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
  // Only the tool's JSON lines; anything else a library printed goes to stderr with a note, never into a ratio.
  const lines = out.trim().split('\n').flatMap((l) => {
    try {
      const v = JSON.parse(l) as unknown;
      if (v !== null && typeof v === 'object' && 'config' in v) return [v as Record<string, number | string>];
    } catch { /* not JSON: reported below */ }
    console.error(`dpo.py printed a line that is not a result (ignored): ${l.slice(0, 200)}`);
    return [];
  });
  for (const l of lines) console.log(JSON.stringify({ bench: 'align.baseline', ...l }));
  const bar: Record<string, number> = { fixed: 1.0, realistic: 1.5, logprobs: 1.0, generation: 1.0 };
  for (const l of lines) {
    const config = String(l['config']);
    const mine = ours[config];
    if (mine === undefined || bar[config] === undefined) continue;
    const ratio = mine / Number(l['tokens_per_s']);
    console.log(JSON.stringify({
      bench: 'align.ratio', config, against: l['engine'], alignd_tokens_per_s: mine, baseline_tokens_per_s: l['tokens_per_s'],
      ratio: +ratio.toFixed(3), bar: bar[config], meets_bar: ratio >= bar[config]!,
    }));
  }
}

export const baselineAvailable = (): boolean => existsSync(baselinePython);
