/**
 * LoRA (Hu et al., 2021) as PEFT implements it: for a targeted linear module with input x,
 *   y = base(x) + scaling · B(A(dropout(x))),  A: [r, in], B: [out, r],
 *   scaling = lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA (Kalajdzievski, 2023).
 * GPT-2's Conv1D modules get the same A/B shapes (PEFT reads in/out from the [in, out] weight
 * and sets fan_in_fan_out=true, which only matters when merging).
 * Dropout applies in training only (the engine's job); this module holds config, targets,
 * initialisation and the adapter's tensors.
 */
import { AligndError } from '../base/errors.js';
import type { ModelSpec } from './hf-config.js';
import { createRng } from '../base/random.js';
import { linearModules, type LinearModule } from './weights.js';

export const LLAMA_TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export const GPT2_TARGETS = ['c_attn', 'c_proj', 'c_fc'] as const;

export interface LoraConfig {
  r: number;
  loraAlpha: number;
  /** Module names (matched as PEFT does: the full path or its last components). */
  targetModules: string[];
  loraDropout: number;
  useRslora: boolean;
  baseModelNameOrPath: string | null;
}

export interface LoraPair {
  module: LinearModule;
  /** [r, in] row-major. */
  a: Float32Array;
  /** [out, r] row-major. */
  b: Float32Array;
}

export interface LoraAdapter {
  config: LoraConfig;
  /** Keyed by module path (`model.layers.0.self_attn.q_proj`), in model order. */
  pairs: Map<string, LoraPair>;
}

export function loraScaling(cfg: Pick<LoraConfig, 'r' | 'loraAlpha' | 'useRslora'>): number {
  return cfg.useRslora ? cfg.loraAlpha / Math.sqrt(cfg.r) : cfg.loraAlpha / cfg.r;
}

export function validTargets(spec: ModelSpec): readonly string[] {
  return spec.family === 'llama' ? LLAMA_TARGETS : GPT2_TARGETS;
}

/** PEFT's `check_target_module_exists` for a list: exact path, or path ending in ".name". */
function matches(path: string, target: string): boolean {
  return path === target || path.endsWith(`.${target}`);
}

/** The linear modules a config targets; an unknown target or rank ≤ 0 is an ADAPTER_INVALID error. */
export function loraTargets(spec: ModelSpec, cfg: LoraConfig, source = 'lora config'): LinearModule[] {
  if (!Number.isInteger(cfg.r) || cfg.r <= 0) {
    throw new AligndError('ADAPTER_INVALID', `LoRA rank r must be a positive integer, got ${cfg.r}`, { input: source, action: 'set r to e.g. 8 or 16' });
  }
  if (!(cfg.loraAlpha > 0)) throw new AligndError('ADAPTER_INVALID', `lora_alpha must be positive, got ${cfg.loraAlpha}`, { input: source, action: 'set lora_alpha (commonly 2·r)' });
  if (!(cfg.loraDropout >= 0 && cfg.loraDropout < 1)) throw new AligndError('ADAPTER_INVALID', `lora_dropout must be in [0, 1), got ${cfg.loraDropout}`, { input: source, action: 'set lora_dropout to e.g. 0.05' });
  if (cfg.targetModules.length === 0) {
    throw new AligndError('ADAPTER_INVALID', 'LoRA target_modules is empty', { input: source, action: `name modules among: ${validTargets(spec).join(', ')}` });
  }
  const mods = linearModules(spec);
  for (const t of cfg.targetModules) {
    if (!mods.some((m) => matches(m.path, t))) {
      throw new AligndError('ADAPTER_INVALID', `LoRA target module "${t}" does not exist in this ${spec.modelType} model`, {
        input: source, action: `target modules for ${spec.modelType}: ${validTargets(spec).join(', ')}`,
      });
    }
  }
  return mods.filter((m) => cfg.targetModules.some((t) => matches(m.path, t)));
}

/**
 * A fresh adapter as PEFT's `reset_lora_parameters(init_lora_weights=True)` makes it:
 * A ~ kaiming_uniform_(a=√5), i.e. U(−1/√in, 1/√in) (gain √(2/(1+a²)) · √(3/fan_in)); B = 0.
 * Deterministic for a seed (not torch's RNG stream, which no TS code can reproduce).
 */
export function initLora(spec: ModelSpec, cfg: LoraConfig, seed: number): LoraAdapter {
  const rng = createRng(seed);
  const pairs = new Map<string, LoraPair>();
  for (const module of loraTargets(spec, cfg)) {
    const bound = 1 / Math.sqrt(module.inFeatures);
    const a = new Float32Array(cfg.r * module.inFeatures);
    for (let i = 0; i < a.length; i++) a[i] = rng.uniform(-bound, bound);
    pairs.set(module.path, { module, a, b: new Float32Array(module.outFeatures * cfg.r) });
  }
  return { config: cfg, pairs };
}

/** Adds scaling · (x Aᵀ) Bᵀ to y in place: x [T, in], y [T, out]. */
export function applyLora(pair: LoraPair, r: number, scaling: number, x: Float32Array, y: Float32Array, T: number): void {
  const { inFeatures: nin, outFeatures: nout } = pair.module;
  const h = new Float64Array(r);
  for (let t = 0; t < T; t++) {
    for (let k = 0; k < r; k++) {
      let s = 0;
      for (let i = 0; i < nin; i++) s += x[t * nin + i]! * pair.a[k * nin + i]!;
      h[k] = s;
    }
    for (let o = 0; o < nout; o++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += pair.b[o * r + k]! * h[k]!;
      y[t * nout + o] = y[t * nout + o]! + scaling * s;
    }
  }
}
