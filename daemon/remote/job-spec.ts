/**
 * The contract between alignd and the job it ships (trainers/trl/alignd_trl/): `job.json`, which
 * alignd writes into the round's directory on the shared storage, and `out/metrics.json`, which the
 * job writes back beside the PEFT adapter. Both are versioned; the Python side checks the format
 * string and refuses one it does not know.
 *
 * The knobs travel as the policy's own sections (objective, kl, lora), under the policy schema's
 * names, which are TRL's (loss_type, beta, learning_rate, max_grad_norm, ...): the job maps each one
 * to its DPOConfig/KTOConfig field one to one, and defaults live only in the policy schema.
 */
import { z } from 'zod';
import type { Policy } from '../policy/schema.js';

export const JOB_FORMAT = 'alignd.trl-job/v1';
export const METRICS_FORMAT = 'alignd.trl-metrics/v1';
export const JOB_FILE = 'job.json';
export const WINDOW_FILE = 'window.jsonl';
export const HELDOUT_FILE = 'heldout.jsonl';
export const OUT_DIR = 'out';
export const METRICS_FILE = 'metrics.json';

/** One exported row: a preference pair or a KTO row, the prompt as text or chat messages. */
export interface ExportedRow {
  id: number;
  type: 'pair' | 'kto';
  prompt: string | Array<{ role: string; content: string }>;
  chosen: string | null;
  rejected: string | null;
  response: string | null;
  /** KTO: up (desirable) or down. */
  label: string | null;
}

/** The policy's objective section, under the policy schema's names (every default resolved there). */
export type JobObjective = Policy['objective'];
/** The policy's kl section (budgets, the guard's cadence and contexts). */
export type JobKl = Policy['kl'];

export interface JobSpec {
  format: typeof JOB_FORMAT;
  model: string;
  round: number;
  /** Seeds the job's shuffling and dropout (the local engine seeds by round too). */
  seed: number;
  /** The base model as the cluster loads it (a directory or a hub id the cluster can reach). */
  base_model: string;
  /** Written into the returned adapter's config (what servers know the base as). */
  base_model_name_or_path: string;
  /** Directories in the job directory: the deployed adapter (the reference and the warm start), the anchor; null = the base model. */
  deployed_adapter: string | null;
  anchor_adapter: string | null;
  window: string;
  heldout: string;
  output: string;
  objective: JobObjective;
  kl: JobKl;
  lora: Policy['lora'];
  /** sha256 of every input file, by its path in the job directory; the job refuses a mismatch. */
  files: Record<string, string>;
}

const finite = z.number().refine(Number.isFinite, 'must be finite');

/** What the job writes to out/metrics.json; names as the local engine's round metrics (TrainingResult). */
export const jobMetricsSchema = z.looseObject({
  format: z.literal(METRICS_FORMAT),
  loss: finite.nullable(),
  steps: z.number().int().nonnegative(),
  kept_step: z.number().int().nonnegative(),
  stop_reason: z.enum(['completed', 'kl_budget', 'kl_budget_exhausted', 'diverged', 'no_data']),
  reason: z.string().nullable(),
  beta: finite,
  kl: z.strictObject({ perRound: finite, cumulative: finite, sampledSequence: finite.nullable() }),
  kl_checks: z.array(z.strictObject({ step: z.number().int().nonnegative(), perRound: finite, cumulative: finite, beta: finite })),
  heldout: z.strictObject({ 'pairs': z.number().int().nonnegative(), 'rewards/accuracies': finite, 'rewards/margins': finite }).nullable(),
  examples: z.number().int().nonnegative(),
  /** Optimizer steps as TRL logged them (its log_history; logging_steps = 1). */
  step_logs: z.array(z.strictObject({ step: z.number().int().positive(), loss: finite, lr: finite, grad_norm: finite, beta: finite })),
  /** sha256 of each file of out/adapter (absent when no adapter was written). */
  adapter_files: z.record(z.string(), z.string().regex(/^[0-9a-f]{64}$/)),
  versions: z.record(z.string(), z.string()),
  wall_s: z.record(z.string(), z.number()),
});
export type JobMetrics = z.infer<typeof jobMetricsSchema>;
