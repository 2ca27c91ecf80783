/**
 * The data hand-off of a remote round, through a directory both sides reach (a shared volume):
 *
 *   <storage>/<model>/r<round>-<nonce>/job.json        the JobSpec (knobs, paths, input checksums)
 *                                     window.jsonl    the round's training window (ExportedRow per line)
 *                                     heldout.jsonl   held-out rows (KL contexts, held-out metrics)
 *                                     deployed/       the deployed PEFT adapter (reference + warm start)
 *                                     anchor/         the cumulative-KL anchor, when a version is pinned
 *                                     out/adapter/    written by the job: the candidate PEFT adapter
 *                                     out/metrics.json
 *
 * Every input is checksummed in job.json and every output in metrics.json; a mismatch either way
 * refuses the round. The returned adapter is copied into the registry's staging and verified there
 * (shapes against the policy's LoRA, finite values) before it becomes a version.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { AligndError } from '../base/errors.js';
import { writeDurable } from '../base/fs-durable.js';
import type { Example } from '../store/buffer.js';
import type { ModelSpec } from '../model/hf-config.js';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS, readPeftAdapter } from '../model/peft.js';
import type { LoraAdapter } from '../model/lora.js';
import type { Policy } from '../policy/schema.js';
import { HELDOUT_FILE, JOB_FILE, JOB_FORMAT, jobMetricsSchema, METRICS_FILE, METRICS_FORMAT, OUT_DIR, WINDOW_FILE, type ExportedRow, type JobKl, type JobMetrics, type JobObjective, type JobSpec } from './job-spec.js';

const sha256 = (bytes: Uint8Array | string): string => createHash('sha256').update(bytes).digest('hex');
export const fileSha256 = (path: string): string => sha256(readFileSync(path));

export function exportedRow(e: Example): ExportedRow {
  return { id: e.id, type: e.type === 'kto' ? 'kto' : 'pair', prompt: e.prompt, chosen: e.chosen, rejected: e.rejected, response: e.response, label: e.label };
}

export interface ExportInput {
  /** The storage root as alignd sees it (trainer.storage.path). */
  root: string;
  model: string;
  round: number;
  policy: Policy;
  /** The training knobs, resolved (JobSpec). */
  objective: JobObjective;
  kl: JobKl;
  /** The base model as the cluster loads it. */
  baseModel: string;
  window: Example[];
  heldout: Example[];
  /** Adapter directories (registry versions); null = the base model. */
  deployedAdapterDir: string | null;
  anchorAdapterDir: string | null;
}

export interface ExportedJob {
  /** The job directory as alignd sees it. */
  dir: string;
  /** Its name under the storage root (the cluster sees it at <cluster_path>/<model>/<name>). */
  relative: string;
  spec: JobSpec;
  bytes: number;
}

/** Write the round's inputs and job.json (last: a job.json present means the inputs are complete). */
export function exportRound(input: ExportInput): ExportedJob {
  const name = `r${input.round}-${randomBytes(4).toString('hex')}`;
  const dir = join(input.root, input.model, name);
  mkdirSync(dir, { recursive: true });
  const files: Record<string, string> = {};
  let bytes = 0;
  const put = (rel: string, body: Uint8Array | string): void => {
    writeDurable(join(dir, rel), body);
    files[rel] = sha256(body);
    bytes += typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
  };
  const jsonl = (rows: Example[]): string => rows.map((e) => JSON.stringify(exportedRow(e))).join('\n') + (rows.length > 0 ? '\n' : '');
  put(WINDOW_FILE, jsonl(input.window.filter((e) => !e.heldout)));
  put(HELDOUT_FILE, jsonl(input.heldout));
  const copyAdapter = (from: string | null, rel: string): string | null => {
    if (from === null) return null;
    mkdirSync(join(dir, rel));
    for (const f of [ADAPTER_CONFIG, ADAPTER_WEIGHTS]) put(join(rel, f), readFileSync(join(from, f)));
    return rel;
  };
  const p = input.policy;
  const spec: JobSpec = {
    format: JOB_FORMAT, model: input.model, round: input.round, seed: input.round,
    base_model: input.baseModel, base_model_name_or_path: p.base_model.served_name ?? p.base_model.path,
    deployed_adapter: copyAdapter(input.deployedAdapterDir, 'deployed'),
    anchor_adapter: copyAdapter(input.anchorAdapterDir, 'anchor'),
    window: WINDOW_FILE, heldout: HELDOUT_FILE, output: OUT_DIR,
    objective: input.objective, kl: input.kl, lora: p.lora, files,
  };
  writeDurable(join(dir, JOB_FILE), JSON.stringify(spec, null, 2) + '\n');
  return { dir, relative: join(input.model, name), spec, bytes };
}

function refused(dir: string, message: string, action = 'the round is discarded and the deployed version untouched; check the job\'s log and the shared storage'): AligndError {
  return new AligndError('ADAPTER_INVALID', message, { input: dir, action });
}

/** The job's metrics.json, validated against the contract. */
export function readMetrics(jobDir: string): JobMetrics {
  const path = join(jobDir, OUT_DIR, METRICS_FILE);
  if (!existsSync(path)) throw refused(path, 'the training job succeeded but wrote no metrics.json');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw refused(path, `metrics.json is not valid JSON: ${(err as Error).message}`);
  }
  const r = jobMetricsSchema.safeParse(raw);
  if (!r.success) throw refused(path, `metrics.json does not follow ${METRICS_FORMAT}: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** The adapter directory the job writes. */
export const returnedAdapterDir = (jobDir: string): string => join(jobDir, OUT_DIR, 'adapter');

/**
 * Copy the returned adapter (`from`) into `into` (the registry's staging) and verify it there: the files
 * are the ones the job hashed, the config is the policy's LoRA shape, every tensor has the shape
 * the base model implies and holds finite values. Returns the adapter as read.
 */
export function takeReturnedAdapter(from: string, metrics: JobMetrics, into: string, spec: ModelSpec, policy: Policy): LoraAdapter {
  const expected = metrics.adapter_files;
  for (const f of [ADAPTER_CONFIG, ADAPTER_WEIGHTS]) {
    if (!(f in expected)) throw refused(from, `the job's metrics.json lists no checksum for ${f}`);
    if (!existsSync(join(from, f))) throw refused(from, `the returned adapter has no ${f}`);
  }
  mkdirSync(into, { recursive: true });
  for (const f of readdirSync(from)) {
    if (!(f in expected)) continue; // only what the job vouched for (e.g. no README.md from PEFT)
    copyFileSync(join(from, f), join(into, f));
    const got = fileSha256(join(into, f));
    if (got !== expected[f]) throw refused(from, `${f} has sha256 ${got}, the job wrote ${expected[f]} (a torn or altered copy on the shared storage)`);
  }
  const adapter = readPeftAdapter(into, spec); // tensor names and shapes against the base model
  const c = adapter.config;
  const want = policy.lora;
  const same = c.r === want.r && c.loraAlpha === want.alpha && c.useRslora === want.use_rslora
    && [...c.targetModules].sort().join(',') === [...want.target_modules].sort().join(',');
  if (!same) {
    throw refused(from, `the returned adapter's LoRA shape (r=${c.r}, alpha=${c.loraAlpha}, rslora=${c.useRslora}, targets ${[...c.targetModules].sort().join(',')}) is not the policy's `
      + `(r=${want.r}, alpha=${want.alpha}, rslora=${want.use_rslora}, targets ${[...want.target_modules].sort().join(',')})`, 'check trainers/trl against this alignd version; the round is discarded');
  }
  for (const [path, p] of adapter.pairs) {
    if (!p.a.every(Number.isFinite) || !p.b.every(Number.isFinite)) throw refused(from, `the returned adapter holds NaN/Inf values in ${path}`, 'the round is discarded (training diverged on the cluster); lower objective.learning_rate');
  }
  return adapter;
}

/** Remove a job directory (after the round, whatever its outcome). */
export function removeJobDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
