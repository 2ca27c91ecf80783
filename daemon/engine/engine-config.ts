/**
 * The engine's configuration block (daemon config `engine:`), validated by zod. Maps onto
 * RuntimeOptions for createSession().
 */
import { z } from 'zod';
import type { RuntimeOptions } from './sessions.js';

export const engineConfigSchema = z.strictObject({
  /** Execution provider: cpu (bundled), cuda (`ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci`), webgpu (Vulkan on Linux). */
  provider: z.enum(['cpu', 'cuda', 'webgpu']).default('cpu'),
  /** Intra-op threads; 0 lets onnxruntime use one per core. */
  threads: z.number().int().min(0).max(1024).default(0),
  graphOptimizationLevel: z.enum(['disabled', 'basic', 'extended', 'all']).default('all'),
  /** Idle threads spin-wait between ops (faster for one busy session; off when sessions alternate). */
  spinning: z.boolean().default(false),
  /** WebGPU only: keep trainable tensors and moments on the device between steps. */
  keepOnDevice: z.boolean().default(false),
});

export type EngineConfig = z.infer<typeof engineConfigSchema>;

export function runtimeOptions(c: EngineConfig): RuntimeOptions {
  const o: RuntimeOptions = { provider: c.provider, threads: c.threads, graphOptimizationLevel: c.graphOptimizationLevel, spinning: c.spinning };
  if (c.keepOnDevice && c.provider === 'webgpu') o.preferredOutputLocation = 'gpu-buffer';
  return o;
}
