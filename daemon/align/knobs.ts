/**
 * The policy knobs a training round reads, as a plain typed object. Field names follow TRL's
 * DPOConfig/KTOConfig/TrainingArguments in camelCase (loss_type → lossType, label_smoothing →
 * labelSmoothing, rpo_alpha → rpoAlpha, learning_rate → learningRate, lr_scheduler_type →
 * lrSchedulerType, warmup_ratio → warmupRatio, max_steps → maxSteps, num_train_epochs →
 * numTrainEpochs, per_device_train_batch_size → batchSize, max_grad_norm → maxGradNorm, ...), so
 * the policy schema (daemon/policy) can map its YAML onto this one-to-one.
 *
 * KL budgets are in nats per response token: the mean exact token-level KL(π‖π_ref) over the
 * held-out contexts' response positions (see kl.ts).
 */
import { AligndError } from '../base/errors.js';
import type { LoraConfig } from '../model/lora.js';
import { labelSmoothingRefusal, type Policy } from '../policy/schema.js';
import type { DpoLossType } from './losses.js';

export interface AlignKnobs {
  /** 'dpo' trains on pairs, 'kto' on unpaired up/down rows. */
  objective: 'dpo' | 'kto';
  lossType: DpoLossType;
  beta: number;
  labelSmoothing: number;
  /** RPO NLL weight on chosen responses; 0 = off. */
  rpoAlpha: number;
  desirableWeight: number;
  undesirableWeight: number;

  learningRate: number;
  lrSchedulerType: 'cosine' | 'linear' | 'constant';
  warmupRatio: number;
  /** Optimizer steps per round; when 0, numTrainEpochs over the window decides. */
  maxSteps: number;
  numTrainEpochs: number;
  /** Pairs (or KTO rows) per optimizer step. */
  batchSize: number;
  /** Pairs per forward/backward; batchSize / microBatchSize micro-batches are accumulated. */
  microBatchSize: number;
  maxGradNorm: number;
  weightDecay: number;
  /** Prompt + response tokens per sequence (longer ones are truncated, prompt first). */
  maxLength: number;
  seed: number;

  klBudget: {
    /** Against the deployed version (this round's reference). */
    perRound: number;
    /** Against the anchor (base model, or a pinned version). */
    cumulative: number;
  };
  /** Exact KL on held-out contexts every N optimizer steps (1 = before every step is committed). */
  klEveryNSteps: number;
  /** Held-out contexts used for the exact KL (the first N held-out examples). */
  klContexts: number;
  /** Ziegler et al. 2019 adaptive β (target in nats/token, clamped to [minBeta, maxBeta]); null = fixed β. */
  adaptiveBeta: { target: number; kBeta: number; minBeta: number; maxBeta: number } | null;
  /** Sampled sequence-level KL at the end: responses per held-out prompt set, tokens each. */
  sampledKl: { prompts: number; maxNewTokens: number; temperature: number };

  /** LoRA shape for a round with no deployed adapter yet (PEFT names in camelCase). */
  lora: { r: number; loraAlpha: number; targetModules: string[]; useRslora: boolean };
}

export const DEFAULT_KNOBS: AlignKnobs = {
  objective: 'dpo',
  lossType: 'sigmoid',
  beta: 0.1,
  labelSmoothing: 0,
  rpoAlpha: 0,
  desirableWeight: 1,
  undesirableWeight: 1,
  learningRate: 5e-4,
  lrSchedulerType: 'cosine',
  warmupRatio: 0.1,
  maxSteps: 0,
  numTrainEpochs: 1,
  batchSize: 8,
  microBatchSize: 8,
  maxGradNorm: 1,
  weightDecay: 0,
  maxLength: 256,
  seed: 0,
  klBudget: { perRound: 0.05, cumulative: 0.5 },
  klEveryNSteps: 5,
  klContexts: 32,
  adaptiveBeta: null,
  sampledKl: { prompts: 16, maxNewTokens: 32, temperature: 1 },
  lora: { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'], useRslora: false },
};

export function withDefaults(k: Partial<AlignKnobs>): AlignKnobs {
  const out: AlignKnobs = { ...DEFAULT_KNOBS, ...k, klBudget: { ...DEFAULT_KNOBS.klBudget, ...k.klBudget } };
  const bad = (field: string, why: string): never => {
    throw new AligndError('CONFIG_INVALID', `align.${field} ${why}`, { input: 'policy alignment knobs', action: `fix align.${field} in the policy` });
  };
  if (!(out.beta > 0)) bad('beta', `must be > 0, got ${out.beta}`);
  if (!(out.labelSmoothing >= 0 && out.labelSmoothing < 0.5)) bad('labelSmoothing', `must be in [0, 0.5), got ${out.labelSmoothing}`);
  if (out.labelSmoothing > 0 && out.lossType !== 'robust') bad('labelSmoothing', `refused: ${labelSmoothingRefusal(out.lossType)}`);
  if (!(out.learningRate > 0)) bad('learningRate', `must be > 0, got ${out.learningRate}`);
  if (!(out.batchSize >= 1 && out.microBatchSize >= 1 && out.batchSize % out.microBatchSize === 0)) {
    bad('microBatchSize', `(${out.microBatchSize}) must divide batchSize (${out.batchSize})`);
  }
  if (!(out.klBudget.perRound > 0 && out.klBudget.cumulative > 0)) bad('klBudget', 'budgets must be > 0');
  if (!(out.klEveryNSteps >= 1)) bad('klEveryNSteps', 'must be ≥ 1');
  if (!(out.warmupRatio >= 0 && out.warmupRatio < 1)) bad('warmupRatio', 'must be in [0, 1)');
  return out;
}

/**
 * The knobs a policy file sets (daemon/policy/schema.ts), mapped onto AlignKnobs. Fields read:
 * objective.{loss_type, beta, label_smoothing, learning_rate, max_steps, num_epochs, batch_size,
 * micro_batch_size, max_grad_norm, rpo_alpha, kto.desirable_weight, kto.undesirable_weight},
 * kl.{per_round, cumulative, adaptive_beta.{enabled, target, k_beta, min_beta, max_beta}}.
 * (objective.replay_fraction and data.max_*_share go to the buffer's window(), kl.anchor to the
 * caller's choice of anchor adapter, lora.* to loraConfigFromPolicy.)
 */
export function knobsFromPolicy(p: Policy): Partial<AlignKnobs> {
  const o = p.objective;
  const ab = p.kl.adaptive_beta;
  const out: Partial<AlignKnobs> = {
    objective: o.loss_type === 'kto' ? 'kto' : 'dpo',
    lossType: o.loss_type === 'kto' ? 'sigmoid' : o.loss_type,
    beta: o.beta,
    labelSmoothing: o.label_smoothing,
    rpoAlpha: o.rpo_alpha ?? 0,
    desirableWeight: o.kto.desirable_weight,
    undesirableWeight: o.kto.undesirable_weight,
    learningRate: o.learning_rate,
    maxSteps: o.max_steps ?? 0,
    numTrainEpochs: o.num_epochs ?? 1,
    batchSize: o.batch_size,
    microBatchSize: o.micro_batch_size,
    maxGradNorm: o.max_grad_norm,
    klBudget: { perRound: p.kl.per_round, cumulative: p.kl.cumulative },
    adaptiveBeta: ab.enabled ? { target: ab.target, kBeta: ab.k_beta, minBeta: ab.min_beta, maxBeta: ab.max_beta } : null,
  };
  return out;
}

/** The policy's LoRA block as the model stage's LoraConfig (PEFT names). */
export function loraConfigFromPolicy(p: Policy): LoraConfig {
  return {
    r: p.lora.r, loraAlpha: p.lora.alpha, targetModules: [...p.lora.target_modules], loraDropout: p.lora.dropout,
    useRslora: p.lora.use_rslora, baseModelNameOrPath: p.base_model.served_name ?? p.base_model.path,
  };
}
