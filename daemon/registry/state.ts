/**
 * deployed.json: which version should be served (`desired`), which each server target actually
 * serves, and whether the last push reached every target. Written atomically after every target
 * answers, so after a crash or a partial failure the file says exactly who serves what, and
 * `reconcile` retries the targets that lag.
 */
import { z } from 'zod';

export const targetStateSchema = z.object({
  /** Version this target is known to serve (null: nothing of ours yet). */
  version: z.string().nullable(),
  name: z.string().nullable(),
  /** Last push error, cleared on success. */
  error: z.string().nullable().default(null),
  attempts: z.number().int().nonnegative().default(0),
  updated_at: z.string(),
});

export const deploymentStateSchema = z.object({
  desired: z.string(),
  desired_name: z.string(),
  /** Why: `gate`, `approval`, `pinned by policy`, `reconcile`. */
  reason: z.string(),
  since: z.string(),
  complete: z.boolean(),
  /** The last version every target confirmed (the training reference while a push is incomplete). */
  last_complete: z.string().nullable().default(null),
  targets: z.record(z.string(), targetStateSchema),
});
export type DeploymentState = z.infer<typeof deploymentStateSchema>;
export type DeploymentStateInput = z.input<typeof deploymentStateSchema>;
export type TargetState = z.infer<typeof targetStateSchema>;
