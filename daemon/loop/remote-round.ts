/**
 * The training phase of a round on a remote engine (policy `trainer.kind: ray`): export the window
 * to the shared storage, run the job alignd ships (trainers/trl) on the RemoteTrainer, and bring
 * the adapter back. Returns what the local engine's runRound returns, so the rest of the round
 * (registry, gate, promotion, lineage) is the same code for both. Any failure throws: the loop
 * records a discarded round with the reason (the job's log tail) and the deployed version is
 * untouched.
 */
import { join } from 'node:path';
import { AligndError } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import type { Example } from '../store/buffer.js';
import type { Policy, TrainerConfig } from '../policy/schema.js';
import type { AlignModel } from '../align/context.js';
import type { TrainingResult } from '../align/train-round.js';
import { exportRound, readMetrics, removeJobDir, returnedAdapterDir, takeReturnedAdapter } from '../remote/handoff.js';
import { publishJobCode, trainerRequirements } from '../remote/job-code.js';
import { jobLogTail, runJob } from '../remote/run-job.js';
import type { RemoteTrainer } from '../remote/remote-trainer.js';
import { JOB_FILE, type JobKl, type JobMetrics, type JobObjective } from '../remote/job-spec.js';
import type { LoraAdapter } from '../model/lora.js';

type RayTrainer = Extract<TrainerConfig, { kind: 'ray' }>;

export interface RemoteRoundInput {
  trainer: RemoteTrainer;
  policy: Policy;
  m: AlignModel;
  model: string;
  round: number;
  window: Example[];
  heldout: Example[];
  /** The base model's directory as alignd loads it (the cluster's default view of it). */
  baseDir: string;
  deployedAdapterDir: string | null;
  anchorAdapterDir: string | null;
  /** The round's local directory (the verified adapter is kept there for the gate). */
  outDir: string;
  log: Logger;
  signal?: AbortSignal;
}

/** Where the time of a remote round went (ms): the bench prints these. */
export interface RemoteTiming { export_ms: number; submit_ms: number; job_ms: number; return_ms: number; export_bytes: number; job_wall_s: Record<string, number> }

export interface RemoteTrainingResult extends TrainingResult {
  /** Writes the returned adapter into the registry's staging directory, verified there. */
  stage: ((dir: string) => void) | null;
  remote: { trainer: string; job: string; timing: RemoteTiming; versions: Record<string, string> };
}

/** The knobs the job maps to TRL: the policy's own sections (the policy schema holds every default). */
export function jobKnobs(policy: Policy): { objective: JobObjective; kl: JobKl } {
  return { objective: policy.objective, kl: policy.kl };
}

export async function trainRemote(input: RemoteRoundInput): Promise<RemoteTrainingResult> {
  const cfg = input.policy.trainer as RayTrainer;
  if (cfg.kind !== 'ray') throw new AligndError('INTERNAL', 'trainRemote called for a local trainer');
  const root = cfg.storage.path;
  const clusterRoot = cfg.storage.cluster_path ?? root;
  const t0 = Date.now();
  const code = publishJobCode(root);
  const job = exportRound({
    root, model: input.model, round: input.round, policy: input.policy, ...jobKnobs(input.policy), baseModel: cfg.base_model ?? input.baseDir,
    window: input.window, heldout: input.heldout, deployedAdapterDir: input.deployedAdapterDir, anchorAdapterDir: input.anchorAdapterDir,
  });
  const exportMs = Date.now() - t0;
  const log = input.log.child({ job_dir: job.dir });
  try {
    const id = `alignd-${input.model}-r${input.round}-${job.relative.split('-').at(-1)}`;
    const run = await runJob(input.trainer, {
      id,
      entrypoint: ['env', `PYTHONPATH=${join(clusterRoot, code)}`, cfg.python, '-m', 'alignd_trl', '--job', join(clusterRoot, job.relative, JOB_FILE)],
      pip: cfg.runtime_env.pip ?? trainerRequirements(),
      env: cfg.runtime_env.env_vars,
      metadata: { alignd_model: input.model, alignd_round: String(input.round) },
    }, { timeoutMs: cfg.timeout_s * 1000, pollMs: cfg.poll_s * 1000, log, ...(input.signal === undefined ? {} : { signal: input.signal }) });

    const t1 = Date.now();
    const spec = input.m.ckpt.spec;
    const candidateDir = join(input.outDir, 'adapter');
    let metrics: JobMetrics;
    let candidate: LoraAdapter | null;
    try {
      metrics = readMetrics(job.dir);
      const hasCandidate = metrics.kept_step > 0 && Object.keys(metrics.adapter_files).length > 0;
      candidate = hasCandidate ? takeReturnedAdapter(returnedAdapterDir(job.dir), metrics, candidateDir, spec, input.policy) : null;
    } catch (err) {
      // A malformed return is the job's doing as much as a failed run: its log says why.
      if (!(err instanceof AligndError)) throw err;
      throw new AligndError(err.code, `${err.message}; training job ${run.id} on ${input.trainer.id}, log tail:\n${await jobLogTail(input.trainer, run.id)}`, { cause: err, permanent: err.permanent });
    }
    const returnMs = Date.now() - t1;
    const result: RemoteTrainingResult = {
      candidate, candidateDir: candidate === null ? null : candidateDir,
      stopReason: metrics.stop_reason, reason: metrics.reason, stepsTaken: metrics.steps, keptStep: metrics.kept_step,
      steps: metrics.step_logs.map((l) => ({ step: l.step, lr: l.lr, beta: l.beta, loss: l.loss, gradNorm: l.grad_norm, metrics: {} })),
      klChecks: metrics.kl_checks, kl: metrics.kl, beta: metrics.beta, heldout: metrics.heldout,
      trainedExampleIds: input.window.filter((e) => !e.heldout).map((e) => e.id), skipped: [],
      klContextSource: input.heldout.length > 0 ? 'heldout' : 'train',
      // The job directory is gone by then: the registry's staging copy comes from the round's local
      // copy, checked again (checksums, shapes, finite values) where it becomes a version.
      stage: candidate === null ? null : (dir) => { takeReturnedAdapter(candidateDir, metrics, dir, spec, input.policy); },
      remote: {
        trainer: input.trainer.id, job: run.id, versions: metrics.versions,
        timing: { export_ms: exportMs, submit_ms: run.submitMs, job_ms: run.runMs, return_ms: returnMs, export_bytes: job.bytes, job_wall_s: metrics.wall_s },
      },
    };
    log.info('remote training done', { job: run.id, stop: metrics.stop_reason, kept: metrics.kept_step, ...result.remote.timing });
    return result;
  } finally {
    removeJobDir(job.dir);
  }
}
