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
}).loose();
export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestInput = Pick<Manifest, 'parent' | 'base_model'> & Partial<Pick<Manifest, 'data_window' | 'round_metrics'>>;
