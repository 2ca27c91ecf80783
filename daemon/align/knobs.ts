/**
 * The knobs a training round reads, derived from a validated policy (daemon/policy/schema.ts, the
 * one place every knob's default and constraint lives). This file only renames: no defaults, no
 * validation. Field names follow TRL's DPOConfig/KTOConfig/TrainingArguments in camelCase; each
 * field's comment gives the YAML path it comes from, the name every error and log uses.
 *
 * KL budgets are in nats per response token: the mean exact token-level KL(π‖π_ref) over the
 * held-out contexts' response positions (see kl.ts).
 */
import type { LoraConfig } from '../model/lora.js';
import type { Policy } from '../policy/schema.js';
import type { DpoLossType } from './losses.js';

type Objective = Policy['objective'];
type Kl = Policy['kl'];

/** objective.loss_type sigmoid | ipo | robust | hinge: trains on pairs. */
export interface DpoKnobs {
  kind: 'dpo';
  /** objective.loss_type */
  lossType: DpoLossType;
  /** objective.label_smoothing */
  labelSmoothing: Objective['label_smoothing'];
  /** objective.rpo_alpha (null: off) */
  rpoAlpha: Objective['rpo_alpha'];
}

/** objective.loss_type kto: trains on unpaired up/down rows. */
export interface KtoKnobs {
  kind: 'kto';
  /** objective.kto.desirable_weight */
  desirableWeight: Objective['kto']['desirable_weight'];
  /** objective.kto.undesirable_weight */
  undesirableWeight: Objective['kto']['undesirable_weight'];
}

export interface TrainingKnobs {
  objective: DpoKnobs | KtoKnobs;
  /** objective.beta (the starting β when kl.adaptive_beta is enabled) */
  beta: Objective['beta'];
  /** objective.learning_rate (peak) */
  learningRate: Objective['learning_rate'];
  /** objective.lr_scheduler_type */
  lrSchedulerType: Objective['lr_scheduler_type'];
  /** objective.warmup_ratio */
  warmupRatio: Objective['warmup_ratio'];
  /** objective.max_steps: optimizer steps per round; null: numTrainEpochs over the window decides. */
  maxSteps: Objective['max_steps'];
  /** objective.num_epochs */
  numTrainEpochs: Objective['num_epochs'];
  /** objective.batch_size: pairs (or KTO rows) per optimizer step. */
  batchSize: Objective['batch_size'];
  /** objective.micro_batch_size: rows per forward/backward; batchSize / microBatchSize are accumulated. */
  microBatchSize: Objective['micro_batch_size'];
  /** objective.max_grad_norm */
  maxGradNorm: Objective['max_grad_norm'];
  /** objective.weight_decay */
  weightDecay: Objective['weight_decay'];
  /** objective.max_length: prompt + response tokens per sequence (longer ones lose prompt tokens first). */
  maxLength: Objective['max_length'];
  /** objective.gradient_checkpointing: recompute each decoder layer in the backward pass (TRL gradient_checkpointing). */
  gradientCheckpointing: Objective['gradient_checkpointing'];
  klBudget: {
    /** kl.per_round: against the deployed version (this round's reference). */
    perRound: Kl['per_round'];
    /** kl.cumulative: against the anchor (base model, or a pinned version). */
    cumulative: Kl['cumulative'];
  };
  /** kl.check_steps: exact KL every N optimizer steps (1 = before every step is kept). */
  klEveryNSteps: Kl['check_steps'];
  /** kl.check_contexts: held-out contexts of the exact KL (the first N). */
  klContexts: Kl['check_contexts'];
  /** kl.adaptive_beta (Ziegler et al. 2019; target in nats/token, β clamped to [minBeta, maxBeta]); null when not enabled. */
  adaptiveBeta: { target: number; kBeta: number; minBeta: number; maxBeta: number } | null;
  /** kl.sampled: sampled sequence-level KL at the end (prompts, max_new_tokens, temperature). */
  sampledKl: { prompts: number; maxNewTokens: number; temperature: number };
}

/**
 * The training knobs of a validated policy. (objective.replay_fraction and data.max_*_share go to
 * the buffer's window(), kl.anchor to the caller's choice of anchor adapter, lora.* to
 * loraConfigFromPolicy.)
 */
export function trainingKnobs(p: Policy): TrainingKnobs {
  const o = p.objective;
  const ab = p.kl.adaptive_beta;
  return {
    objective: o.loss_type === 'kto'
      ? { kind: 'kto', desirableWeight: o.kto.desirable_weight, undesirableWeight: o.kto.undesirable_weight }
      : { kind: 'dpo', lossType: o.loss_type, labelSmoothing: o.label_smoothing, rpoAlpha: o.rpo_alpha },
    beta: o.beta,
    learningRate: o.learning_rate,
    lrSchedulerType: o.lr_scheduler_type,
    warmupRatio: o.warmup_ratio,
    maxSteps: o.max_steps,
    numTrainEpochs: o.num_epochs,
    batchSize: o.batch_size,
    microBatchSize: o.micro_batch_size,
    maxGradNorm: o.max_grad_norm,
    weightDecay: o.weight_decay,
    maxLength: o.max_length,
    gradientCheckpointing: o.gradient_checkpointing,
    klBudget: { perRound: p.kl.per_round, cumulative: p.kl.cumulative },
    klEveryNSteps: p.kl.check_steps,
    klContexts: p.kl.check_contexts,
    adaptiveBeta: ab.enabled ? { target: ab.target, kBeta: ab.k_beta, minBeta: ab.min_beta, maxBeta: ab.max_beta } : null,
    sampledKl: { prompts: p.kl.sampled.prompts, maxNewTokens: p.kl.sampled.max_new_tokens, temperature: p.kl.sampled.temperature },
  };
}

/** The policy's LoRA block as the model stage's LoraConfig (PEFT names). */
export function loraConfigFromPolicy(p: Policy): LoraConfig {
  return {
    r: p.lora.r, loraAlpha: p.lora.alpha, targetModules: [...p.lora.target_modules], loraDropout: p.lora.dropout,
    useRslora: p.lora.use_rslora, baseModelNameOrPath: p.base_model.served_name ?? p.base_model.path,
  };
}
