/**
 * The one interface a distributed training engine implements for alignd: submit a job, ask for
 * its state, read its log, stop it. The Ray adapter (adapters/trainers/ray.ts) speaks the Ray Jobs
 * REST API; a Kubernetes Job or Slurm adapter is the same four calls. Everything else about a
 * remote round (the window export, the deadline, cancellation, the log tail in the reason, the
 * adapter's return) lives in this stage, once, for every engine.
 */

/** A job as alignd submits it: one command line, run on the cluster with its own Python environment. */
export interface JobSubmission {
  /** Unique per round attempt (the engine's idempotency key): `alignd-<model>-r<round>-<nonce>`. */
  id: string;
  /** The command line, arguments already shell-quoted where the engine needs a string. */
  entrypoint: string[];
  /** Python packages the job needs on the cluster (pinned requirement strings). */
  pip: string[];
  env: Record<string, string>;
  /** Shown in the engine's UI and listings. */
  metadata: Record<string, string>;
}

/** The engine's view of a job, in Ray's words (other engines map onto these). */
export type JobState = 'PENDING' | 'RUNNING' | 'SUCCEEDED' | 'FAILED' | 'STOPPED';

export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(['SUCCEEDED', 'FAILED', 'STOPPED']);

export interface JobStatus {
  state: JobState;
  /** The engine's explanation (e.g. Ray's `message`), when it gives one. */
  message: string | null;
}

export interface RemoteTrainer {
  /** Stable id for logs and audit records, e.g. `ray:http://ray-head:8265`. */
  readonly id: string;
  /** Submit; resolves once the engine accepted the job (it may still be pending). */
  submit(job: JobSubmission, signal?: AbortSignal): Promise<void>;
  status(id: string, signal?: AbortSignal): Promise<JobStatus>;
  /** The job's log so far (stdout and stderr of the entry point). */
  logs(id: string, signal?: AbortSignal): Promise<string>;
  /** Ask the engine to stop the job; resolves when the request was accepted (not when it stopped). */
  stop(id: string): Promise<void>;
}
