/**
 * PEFT LoRA adapter directories: `adapter_config.json` + `adapter_model.safetensors`, read and
 * written exactly as PEFT's `save_pretrained` does so vLLM, TGI, LoRAX and PEFT load ours as is.
 *
 * - Config: every field PEFT 0.21 writes, `json.dumps(indent=2, sort_keys=True)`, no trailing
 *   newline. `target_modules` is a Python set there (its order follows the interpreter's string
 *   hashing); we write it sorted.
 * - Weights: metadata {"format": "pt"}, keys `base_model.model.<module path>.lora_{A,B}.weight`
 *   (the adapter name is dropped), A [r, in], B [out, r], F32.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { AligndError } from '../base/errors.js';
import type { ModelSpec } from './hf-config.js';
import { loraTargets, validTargets, type LoraAdapter, type LoraConfig, type LoraPair } from './lora.js';
import { pyFloat, pythonJsonDumps } from './pyjson.js';
import { writeFileAtomicDurable } from '../base/fs-durable.js';
import { fromFloat32, readSafetensors, toFloat32, writeSafetensors, type TensorEntry } from './safetensors.js';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
/** The PEFT release whose adapter_config.json field set we write. */
export const PEFT_FORMAT_VERSION = '0.21.2';

const KEY_PREFIX = 'base_model.model.';

export function peftKey(modulePath: string, which: 'A' | 'B'): string {
  return `${KEY_PREFIX}${modulePath}.lora_${which}.weight`;
}

/** adapter_config.json as PEFT 0.21.2 writes it for a plain LoRA adapter. */
export function adapterConfigJson(spec: ModelSpec, cfg: LoraConfig): string {
  const fanInFanOut = spec.family === 'gpt2'; // Conv1D: PEFT forces true
  const doc = {
    alora_invocation_tokens: null,
    alpha_pattern: {},
    arrow_config: null,
    auto_mapping: null,
    base_model_name_or_path: cfg.baseModelNameOrPath,
    bias: 'none',
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: fanInFanOut,
    inference_mode: true,
    init_lora_weights: true,
    kasa_config: null,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: Number.isInteger(cfg.loraAlpha) ? cfg.loraAlpha : pyFloat(cfg.loraAlpha),
    lora_bias: false,
    lora_dropout: pyFloat(cfg.loraDropout),
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    monteclora_config: null,
    peft_type: 'LORA',
    peft_version: PEFT_FORMAT_VERSION,
    qalora_group_size: 16,
    r: cfg.r,
    rank_pattern: {},
    revision: null,
    target_modules: [...cfg.targetModules].sort(),
    target_parameters: null,
    task_type: 'CAUSAL_LM',
    trainable_token_indices: null,
    use_bdlora: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: cfg.useRslora,
    velora_config: null,
  };
  return pythonJsonDumps(doc);
}

/** The tensors of adapter_model.safetensors. */
export function adapterTensors(adapter: LoraAdapter): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  const r = adapter.config.r;
  for (const [path, p] of adapter.pairs) {
    out.set(peftKey(path, 'A'), fromFloat32(p.a, [r, p.module.inFeatures]));
    out.set(peftKey(path, 'B'), fromFloat32(p.b, [p.module.outFeatures, r]));
  }
  return out;
}

/** Write a PEFT adapter directory (created if missing); each file is replaced atomically. */
export function writePeftAdapter(dir: string, spec: ModelSpec, adapter: LoraAdapter): void {
  loraTargets(spec, adapter.config); // validates the config against the model
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), adapterTensors(adapter), { format: 'pt' });
  writeFileAtomicDurable(join(dir, ADAPTER_CONFIG), adapterConfigJson(spec, adapter.config));
}

const adapterConfigSchema = z.looseObject({
  peft_type: z.string(),
  task_type: z.string().nullable().optional(),
  r: z.number().int().positive(),
  lora_alpha: z.number().positive(),
  lora_dropout: z.number().min(0).max(1).optional(),
  target_modules: z.union([z.array(z.string()), z.string()]).nullable(),
  base_model_name_or_path: z.string().nullable().optional(),
  bias: z.string().optional(),
  fan_in_fan_out: z.boolean().optional(),
  use_rslora: z.boolean().optional(),
  use_dora: z.boolean().optional(),
  modules_to_save: z.array(z.string()).nullable().optional(),
  layers_to_transform: z.unknown().optional(),
  rank_pattern: z.record(z.string(), z.unknown()).optional(),
  alpha_pattern: z.record(z.string(), z.unknown()).optional(),
  lora_bias: z.boolean().optional(),
  target_parameters: z.array(z.string()).nullable().optional(),
  layer_replication: z.unknown().optional(),
  // Variants that change the forward pass (PEFT 0.21's LoraConfig); refused by name when set.
  alora_invocation_tokens: z.array(z.number()).nullable().optional(),
  exclude_modules: z.union([z.array(z.string()), z.string()]).nullable().optional(),
  use_bdlora: z.unknown().optional(),
  trainable_token_indices: z.unknown().optional(),
  use_qalora: z.boolean().optional(),
  arrow_config: z.unknown().optional(),
  kasa_config: z.unknown().optional(),
  velora_config: z.unknown().optional(),
  monteclora_config: z.unknown().optional(),
});

/** Set: not null, not false, not an empty list or object. */
const isSet = (v: unknown): boolean => v !== undefined && v !== null && v !== false
  && !(Array.isArray(v) && v.length === 0) && !(typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0);

function bad(dir: string, message: string, action: string): AligndError {
  return new AligndError('ADAPTER_INVALID', message, { input: dir, action });
}

/** Parse and validate adapter_config.json against the model it is meant for. */
export function parseAdapterConfig(raw: unknown, spec: ModelSpec, dir: string): LoraConfig {
  const p = adapterConfigSchema.safeParse(raw);
  if (!p.success) {
    throw bad(dir, `adapter_config.json is invalid: ${p.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`,
      'the adapter must be a PEFT LoRA adapter saved with save_pretrained');
  }
  const c = p.data;
  const unsupported = (what: string, why = ''): AligndError => bad(dir, `adapter uses ${what}, which alignd does not support${why === '' ? '' : `: ${why}`}`,
    'use a plain LoRA adapter (no DoRA, bias "none", no modules_to_save, no rank/alpha patterns, no aLoRA)');
  if (c.peft_type !== 'LORA') throw bad(dir, `peft_type is "${c.peft_type}", not "LORA"`, 'alignd reads LoRA adapters only');
  if (c.task_type !== undefined && c.task_type !== null && c.task_type !== 'CAUSAL_LM') throw bad(dir, `task_type is "${c.task_type}", not "CAUSAL_LM"`, 'use an adapter trained for causal LM');
  if (c.use_dora === true) throw unsupported('DoRA (use_dora: true)');
  if (c.bias !== undefined && c.bias !== 'none') throw unsupported(`bias "${c.bias}"`);
  if (c.lora_bias === true) throw unsupported('lora_bias');
  if (c.modules_to_save !== undefined && c.modules_to_save !== null && c.modules_to_save.length > 0) throw unsupported(`modules_to_save (${c.modules_to_save.join(', ')})`);
  if (c.rank_pattern !== undefined && Object.keys(c.rank_pattern).length > 0) throw unsupported('rank_pattern');
  if (c.alpha_pattern !== undefined && Object.keys(c.alpha_pattern).length > 0) throw unsupported('alpha_pattern');
  if (c.layers_to_transform !== undefined && c.layers_to_transform !== null) throw unsupported('layers_to_transform');
  if (c.layer_replication !== undefined && c.layer_replication !== null) throw unsupported('layer_replication');
  if (c.target_parameters !== undefined && c.target_parameters !== null && c.target_parameters.length > 0) throw unsupported('target_parameters');
  if (isSet(c.alora_invocation_tokens)) {
    throw unsupported(`alora_invocation_tokens (activated LoRA, ${JSON.stringify(c.alora_invocation_tokens)})`,
      'PEFT leaves the tokens before the invocation sequence at the base model, alignd would apply the adapter to every token');
  }
  if (isSet(c.exclude_modules)) {
    const ex = Array.isArray(c.exclude_modules) ? c.exclude_modules.join(', ') : `pattern "${c.exclude_modules}"`;
    throw unsupported(`exclude_modules (${ex})`, 'list the modules in target_modules instead of excluding some');
  }
  if (isSet(c.use_bdlora)) throw unsupported('use_bdlora (BD-LoRA)', 'its block-diagonal factors are not plain A/B matrices');
  if (isSet(c.trainable_token_indices)) throw unsupported('trainable_token_indices', 'it trains embedding rows beside the LoRA matrices');
  if (c.use_qalora === true) throw unsupported('use_qalora (QA-LoRA)', 'its A acts on pooled input groups');
  for (const k of ['arrow_config', 'kasa_config', 'velora_config', 'monteclora_config'] as const) if (isSet(c[k])) throw unsupported(k);
  if (c.target_modules === null || typeof c.target_modules === 'string') {
    throw bad(dir, `target_modules ${c.target_modules === null ? 'is null' : `is the pattern "${c.target_modules}"`}`,
      `list module names instead; for ${spec.modelType}: ${validTargets(spec).join(', ')}`);
  }
  // fan_in_fan_out is not checked: PEFT overrides it for Conv1D itself, and A/B are stored the same.
  const cfg: LoraConfig = {
    r: c.r, loraAlpha: c.lora_alpha, targetModules: c.target_modules, loraDropout: c.lora_dropout ?? 0,
    useRslora: c.use_rslora ?? false, baseModelNameOrPath: c.base_model_name_or_path ?? null,
  };
  loraTargets(spec, cfg, join(dir, ADAPTER_CONFIG));
  return cfg;
}

/** Read a PEFT LoRA adapter directory, checking every tensor against the config and the model. */
export function readPeftAdapter(dir: string, spec: ModelSpec): LoraAdapter {
  const cfgPath = join(dir, ADAPTER_CONFIG);
  const wPath = join(dir, ADAPTER_WEIGHTS);
  if (!existsSync(cfgPath)) throw bad(dir, `no ${ADAPTER_CONFIG} in the adapter directory`, 'point at a directory written by PEFT save_pretrained or by alignd');
  if (!existsSync(wPath)) {
    throw bad(dir, `no ${ADAPTER_WEIGHTS} in the adapter directory`,
      existsSync(join(dir, 'adapter_model.bin')) ? 're-save the adapter with safe_serialization=True (pickle .bin files are not read)' : 'the adapter weights are missing');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(cfgPath, 'utf8'));
  } catch (err) {
    throw new AligndError('ADAPTER_INVALID', `${ADAPTER_CONFIG} is not valid JSON`, { input: cfgPath, action: 'restore the file from the registry', cause: err });
  }
  const config = parseAdapterConfig(raw, spec, dir);
  const tensors = readSafetensors(wPath).tensors;
  const seen = new Set<string>();
  const pairs = new Map<string, LoraPair>();
  const take = (key: string, shape: number[]): Float32Array => {
    const t = tensors.get(key);
    if (t === undefined) throw bad(wPath, `adapter weights lack ${key}`, 'the weights do not match adapter_config.json target_modules; re-save the adapter');
    if (t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1]) {
      throw bad(wPath, `${key} has shape ${JSON.stringify(t.shape)}, expected ${JSON.stringify(shape)} (r=${config.r})`,
        'the adapter was trained for another model or its rank differs from adapter_config.json');
    }
    if (!['F32', 'F16', 'BF16', 'F64'].includes(t.dtype)) throw bad(wPath, `${key} has dtype ${t.dtype}`, 'LoRA weights must be F32, F16 or BF16');
    seen.add(key);
    return Float32Array.from(toFloat32(t)); // own copy: the adapter is mutable training state
  };
  for (const module of loraTargets(spec, config)) {
    const a = take(peftKey(module.path, 'A'), [config.r, module.inFeatures]);
    const b = take(peftKey(module.path, 'B'), [module.outFeatures, config.r]);
    pairs.set(module.path, { module, a, b });
  }
  const extra = [...tensors.keys()].filter((k) => !seen.has(k));
  if (extra.length > 0) {
    throw bad(wPath, `adapter weights hold tensors alignd does not know: ${extra.slice(0, 3).join(', ')}${extra.length > 3 ? ` (+${extra.length - 3})` : ''}`,
      'the adapter has parts beyond plain LoRA (e.g. embeddings or DoRA magnitudes); use a plain LoRA adapter');
  }
  return { config, pairs };
}
