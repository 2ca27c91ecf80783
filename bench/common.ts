/** What the model and align benches share: flags, the ~20M-parameter config, timing helpers. */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { type OrtTensor, type Provider, type Session, createSession, run, toOnnx } from '../daemon/engine/index.js';
import type { ForwardKernels } from '../daemon/model/forward-graph.js';
import { type ProgramKind, buildProgram } from '../daemon/model/inference-programs.js';
import { type GenerateOptions, generateTokens } from '../daemon/model/kv-generation.js';
import type { LoraConfig } from '../daemon/model/lora.js';
import type { Model } from '../daemon/model/model.js';
import { parseModelConfig } from '../daemon/model/hf-config.js';
import { serializeSafetensors } from '../daemon/model/safetensors.js';
import { TINY_CONFIG, TINY_SEED, initTensors } from '../daemon/model/tiny.js';
import { tinyTokenizer } from '../daemon/model/tiny-tokenizer.js';

/**
 * A session of one of the model's programs on the given attention/RMSNorm kernels (the Model's own
 * sessions use the provider's fused ones): what the benches compare in the same run.
 */
export function kernelsSession(model: Model, kind: ProgramKind, lora: LoraConfig | null, kernels: ForwardKernels): Promise<Session> {
  return createSession(toOnnx(buildProgram(kind, model.weights, lora, { kernels })), model.runtime);
}

/** Generation as Model.generate runs it, on a given decode session (kernelsSession). */
export function generateOn(decode: Session, model: Model, prompts: number[][], opts: GenerateOptions, extraFeeds: Record<string, OrtTensor>): Promise<number[][]> {
  return generateTokens((feeds) => run(decode, feeds), model.spec, prompts, opts, model.padId, extraFeeds);
}

export const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt;
};
export const provider = (): Provider => arg('ep', 'cpu') as Provider;

/** ~20M parameters: 12 layers of d 384 (6 heads, 2 kv heads), SwiGLU 1024, the tiny vocabulary. */
export const MID_CONFIG = {
  ...TINY_CONFIG, hidden_size: 384, num_hidden_layers: 12, num_attention_heads: 6, num_key_value_heads: 2, head_dim: 64,
  intermediate_size: 1024, max_position_embeddings: 1024,
};

/** Write the ~20M config (with `overrides`) as a Hugging Face directory (random weights, the tiny tokenizer). */
export function writeMidModel(dir: string, overrides: Partial<typeof MID_CONFIG> = {}): void {
  const config = { ...MID_CONFIG, ...overrides };
  const spec = parseModelConfig(config, 'bench config');
  const tok = tinyTokenizer(config.vocab_size);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  writeFileSync(join(dir, 'model.safetensors'), serializeSafetensors(initTensors(spec, TINY_SEED), { format: 'pt' }));
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tok.tokenizerJson));
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(tok.tokenizerConfig));
}

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Median wall time and mean CPU time (user + system, every thread of the process) of `n` runs after
 * one warm-up run. CPU time is the steadier figure on a shared machine: other processes stretch the
 * wall time, not the work done.
 */
export async function timeCpuMs(fn: () => Promise<unknown>, n: number): Promise<{ wall: number; cpu: number }> {
  await fn();
  const ms: number[] = [];
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  const c = process.cpuUsage(c0);
  return { wall: median(ms), cpu: (c.user + c.system) / 1000 / n };
}

/** Median wall time of `n` runs after one warm-up run (session creation, first-run allocations). */
export async function timeMs(fn: () => Promise<unknown>, n: number): Promise<number> {
  await fn();
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return median(ms);
}
