/**
 * manifest.json of a registry version: where the adapter came from and what the gate said.
 * The zod schema is the single source of truth; unknown fields are kept (passthrough) so a newer
 * alignd's manifest still reads.
 */
import { z } from 'zod';

export const gateDecisionSchema = z.object({
  decision: z.enum(['promote', 'reject', 'hold']),
  reasons: z.array(z.string()),
  /** Every figure the gate computed, by check. */
  figures: z.record(z.string(), z.unknown()),
  decided_at: z.string(),
  /** A person's answer to a `hold`. */
  approval: z.object({ approved: z.boolean(), by: z.string(), at: z.string(), note: z.string().optional() }).optional(),
}).loose();
export type GateRecord = z.infer<typeof gateDecisionSchema>;

/**
 * Probation of a promoted version (daemon/canary): watched on live feedback against `previous`
 * until it is stable, rolled back (then never promoted again automatically) or held for a person.
 */
export const probationRecordSchema = z.object({
  status: z.enum(['watching', 'stable', 'rolled_back', 'held']),
  /** The version it is compared with and rolled back to. */
  previous: z.string(),
  started_at: z.string(),
  /** Traffic share announced for it while watched (staged rollout); null: all traffic. */
  canary_weight: z.number().nullable(),
  /** The decision that ended the watch (or holds it): by alignd's comparison, a person or a policy pin. */
  decision: z.object({
    outcome: z.enum(['stable', 'rollback', 'hold']),
    reason: z.string(),
    by: z.string(),
    at: z.string(),
    trigger: z.string().optional(),
    tenant: z.string().optional(),
    figures: z.unknown().optional(),
    timeline: z.unknown().optional(),
  }).loose().optional(),
}).loose();
export type ProbationRecord = z.infer<typeof probationRecordSchema>;

export const manifestSchema = z.object({
  schema: z.literal('alignd.manifest/v1'),
  model: z.string(),
  version: z.string(),
  parent: z.string().nullable(),
  created_at: z.string(),
  base_model: z.object({ path: z.string(), sha256: z.string().nullable() }).loose(),
  /** sha256 over the adapter directory's files (sorted names; see adapterDigest). */
  adapter_sha256: z.string(),
  adapter_files: z.record(z.string(), z.string()),
  data_window: z.object({
    from: z.string().nullable().optional(),
    to: z.string().nullable().optional(),
    events: z.number().int().nonnegative().optional(),
    kafka_offsets: z.record(z.string(), z.union([z.string(), z.number()])).optional(),
  }).loose().default({}),
  round_metrics: z.record(z.string(), z.unknown()).default({}),
  gate: gateDecisionSchema.nullable().default(null),
  probation: probationRecordSchema.nullable().default(null),
}).loose();
export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestInput = Pick<Manifest, 'parent' | 'base_model'> & Partial<Pick<Manifest, 'data_window' | 'round_metrics'>>;
