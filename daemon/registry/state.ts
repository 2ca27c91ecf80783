/**
 * deployed.json: which version should be served (`desired`), which each server target actually
 * serves, and whether the last push reached every target. Written atomically after every target
 * answers, so after a crash or a partial failure the file says who was last seen serving what.
 * It is a record, not the truth: `reconcile` compares it with what each server lists and pushes
 * wherever the server disagrees (a restarted vLLM forgets every runtime-loaded adapter).
 */
import { z } from 'zod';

export const targetStateSchema = z.object({
  /** Version this target is known to serve (null: nothing of ours yet). */
  version: z.string().nullable(),
  name: z.string().nullable(),
  /** Last push error, cleared on success. */
  error: z.string().nullable().default(null),
  attempts: z.number().int().nonnegative().default(0),
  /** A version this target refused for good (rank above its maximum): not retried until `desired` changes. */
  refused: z.string().nullable().default(null),
  updated_at: z.string(),
});

export const canaryWeightSchema = z.object({
  weight: z.number().gt(0).lt(1),
  baseline: z.string(),
  baseline_name: z.string(),
});
export type CanaryWeight = z.infer<typeof canaryWeightSchema>;

export const deploymentStateSchema = z.object({
  desired: z.string(),
  desired_name: z.string(),
  /** Why: `gate`, `approval`, `pinned by policy`, `reconcile`. */
  reason: z.string(),
  since: z.string(),
  complete: z.boolean(),
  /** The last version every target confirmed (the training reference while a push is incomplete). */
  last_complete: z.string().nullable().default(null),
  /** The rollback version: the last complete version before `desired` (kept loaded beside it). */
  previous: z.string().nullable().default(null),
  targets: z.record(z.string(), targetStateSchema),
  /** Staged rollout: `desired` gets `weight` of traffic, `baseline` the rest (for the user's router); null: all to desired. */
  canary: canaryWeightSchema.nullable().default(null),
  /**
   * What was last announced (version and canary weight): a promotion is announced once, when it
   * first completes, not again when a pass that lost completeness (a listing that failed under
   * load, a restarted server) regains it. Absent in files written before it existed.
   */
  announced: z.object({ version: z.string(), canary: canaryWeightSchema.nullable() }).nullable().optional(),
});
export type DeploymentState = z.infer<typeof deploymentStateSchema>;
export type DeploymentStateInput = z.input<typeof deploymentStateSchema>;
export type TargetState = z.infer<typeof targetStateSchema>;
