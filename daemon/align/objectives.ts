/**
 * The objectives a round trains with, as two implementations of one interface: DPO on preference
 * pairs (Rafailov et al. 2023, with TRL's loss variants) and KTO on unpaired up/down rows
 * (Ethayarajh et al. 2024). Each says how to tokenise the window's rows, how to compute their
 * reference log-probs (once per round, under the deployed version), which program a micro-batch
 * runs, and what that program is fed for a micro-batch of rows.
 */
import { type AdamWConfig, type Feeds, type InputDecls, f32, i64 } from '../engine/index.js';
import { AligndError, errorMessage } from '../base/errors.js';
import type { LoraAdapter } from '../model/lora.js';
import { packedFeeds } from '../model/model.js';
import type { ModelTokenizer, PromptResponseTokens } from '../model/tokenizer.js';
import type { Example } from '../store/buffer.js';
import type { AlignModel, TrainProgram } from './context.js';
import type { DpoKnobs, KtoKnobs, TrainingKnobs } from './knobs.js';
import { packedBatch, sequenceLogps } from './policy-logps.js';
import type { DpoProgramInputs, KtoProgramInputs } from './train-programs.js';

export interface Skipped { id: number; why: string }

/** The per-round inputs every objective shares. */
export interface ObjectiveContext {
  model: AlignModel;
  /** The reference: the deployed adapter (null = the base model). */
  deployed: LoraAdapter | null;
  knobs: TrainingKnobs;
}

/** Rows of type Row, trained by a program whose data inputs are declared by I (train-programs.ts). */
export interface TrainingObjective<Row extends { id: number }, I extends InputDecls> {
  /** What the rows are called in messages ('pairs', 'KTO rows'). */
  rowsName: string;
  /** The window's rows this objective trains on, tokenised; rows that fail are listed in `skipped`. */
  tokenize(examples: Example[], skipped: Skipped[]): Row[];
  /** Reference log-probs of each row under the deployed version, by example id. */
  referenceLogps(rows: Row[]): Promise<Map<number, number[]>>;
  /**
   * The program of a micro-batch: a gradProgram when `accumulate` (what the round runs), else the
   * one-step trainProgram (bench:align compares the two).
   */
  program(accumulate: boolean): Promise<TrainProgram<I>>;
  /** What that program is fed for one micro-batch of rows at β: exactly its declared inputs. */
  feeds(rows: Row[], reference: Map<number, number[]>, beta: number): Promise<Feeds<I>>;
}

/** AdamW as the policy sets it (objective.max_grad_norm, objective.weight_decay). */
export const optimizerOf = (k: TrainingKnobs): AdamWConfig => ({ maxGradNorm: k.maxGradNorm, weightDecay: k.weightDecay });

/** Sequences per reference log-prob run: 2 × micro_batch_size (a DPO micro-batch holds that many). */
const chunkOf = (k: TrainingKnobs): number => 2 * k.microBatchSize;

export function tokenizerOf(m: AlignModel): ModelTokenizer {
  const tok = m.ckpt.tokenizer;
  if (tok === null) throw new AligndError('MODEL_INVALID', 'the base model has no tokenizer.json', { input: m.ckpt.dir, action: 'copy the model\'s tokenizer files into its directory' });
  return tok;
}

export interface PairRow { id: number; chosen: PromptResponseTokens; rejected: PromptResponseTokens }

/** The window's pairs, tokenised (also the held-out pairs' tokenisation). */
export function tokenizePairs(m: AlignModel, exs: Example[], skipped: Skipped[]): PairRow[] {
  const tok = tokenizerOf(m);
  const out: PairRow[] = [];
  for (const e of exs) {
    if (e.type !== 'pair' || e.chosen === null || e.rejected === null) continue;
    try {
      out.push({ id: e.id, chosen: tok.promptResponse(e.prompt, e.chosen), rejected: tok.promptResponse(e.prompt, e.rejected) });
    } catch (err) { skipped.push({ id: e.id, why: errorMessage(err) }); }
  }
  return out;
}

export function dpoTraining(c: ObjectiveContext, o: DpoKnobs): TrainingObjective<PairRow, DpoProgramInputs> {
  const { model: m, knobs: k } = c;
  return {
    rowsName: 'pairs',
    tokenize: (exs, skipped) => tokenizePairs(m, exs, skipped),
    async referenceLogps(rows) {
      const lp = await sequenceLogps(m, c.deployed, rows.flatMap((p) => [p.chosen, p.rejected]), chunkOf(k), k.maxLength);
      return new Map(rows.map((p, i) => [p.id, [lp[2 * i]!, lp[2 * i + 1]!]]));
    },
    program: (accumulate) => m.dpo({ lossType: o.lossType, labelSmoothing: o.labelSmoothing, rpoAlpha: o.rpoAlpha, optimizer: optimizerOf(k), accumulate, recompute: k.gradientCheckpointing }),
    async feeds(rows, ref, beta) {
      // 2P sequences: every chosen response, then every rejected one.
      const b = packedBatch(m, [...rows.map((r) => r.chosen), ...rows.map((r) => r.rejected)], k.maxLength);
      const P = rows.length;
      return {
        ...packedFeeds(b),
        chosen_index: i64([P], rows.map((_, i) => i)), rejected_index: i64([P], rows.map((_, i) => P + i)),
        ref_chosen: f32([P], rows.map((r) => ref.get(r.id)![0]!)), ref_rejected: f32([P], rows.map((r) => ref.get(r.id)![1]!)),
        beta: f32([], [beta]),
      };
    },
  };
}

export interface KtoRow { id: number; prompt: number[]; own: PromptResponseTokens; desirable: boolean }

export function ktoTraining(c: ObjectiveContext, o: KtoKnobs): TrainingObjective<KtoRow, KtoProgramInputs> {
  const { model: m, knobs: k } = c;
  return {
    rowsName: 'KTO rows',
    tokenize(exs, skipped) {
      const tok = tokenizerOf(m);
      const out: KtoRow[] = [];
      for (const e of exs) {
        if (e.type !== 'kto' || e.response === null || (e.label !== 'up' && e.label !== 'down')) continue;
        try {
          const own = tok.promptResponse(e.prompt, e.response);
          out.push({ id: e.id, prompt: own.ids.slice(0, own.promptLength), own, desirable: e.label === 'up' });
        } catch (err) { skipped.push({ id: e.id, why: errorMessage(err) }); }
      }
      return out;
    },
    async referenceLogps(rows) {
      const lp = await sequenceLogps(m, c.deployed, rows.map((r) => r.own), chunkOf(k), k.maxLength);
      return new Map(rows.map((r, i) => [r.id, [lp[i]!]]));
    },
    program: (accumulate) => m.kto({ desirableWeight: o.desirableWeight, undesirableWeight: o.undesirableWeight, optimizer: optimizerOf(k), accumulate, recompute: k.gradientCheckpointing }),
    async feeds(rows, ref, beta) {
      const N = rows.length;
      // Mismatched pairs (x_i, y_{i+1}) for z₀, as TRL's KTOTrainer rotates completions in the batch.
      const mismatched = rows.map((r, i) => {
        const other = rows[(i + 1) % N]!;
        return { ids: [...r.prompt, ...other.own.ids.slice(other.own.promptLength)], promptLength: r.prompt.length };
      });
      const refKl = await sequenceLogps(m, c.deployed, mismatched, 2 * N, k.maxLength);
      const b = packedBatch(m, [...rows.map((r) => r.own), ...mismatched], k.maxLength);
      return {
        ...packedFeeds(b),
        own_index: i64([N], rows.map((_, i) => i)), kl_index: i64([N], rows.map((_, i) => N + i)),
        ref_logps: f32([N], rows.map((r) => ref.get(r.id)![0]!)), ref_kl_logps: f32([N], Array.from(refKl)),
        desirable: f32([N], rows.map((r) => (r.desirable ? 1 : 0))), beta: f32([], [beta]),
      };
    },
  };
}
