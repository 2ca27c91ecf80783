/**
 * Driving one job on a RemoteTrainer to its end: submit, poll until a terminal state, and stop it
 * when the round's deadline passes or alignd shuts down. Every way a job can end other than
 * SUCCEEDED throws TRAINER_FAILED with the tail of the job's log in the message, so the round's
 * recorded reason says what went wrong on the cluster.
 */
import { AligndError, errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { TERMINAL_STATES, type JobState, type JobSubmission, type RemoteTrainer } from './remote-trainer.js';

export interface RunJobOptions {
  /** The job is stopped when it has not finished this long after submission. */
  timeoutMs: number;
  pollMs: number;
  log: Logger;
  /** Shutdown: the job is stopped and the run ends as cancelled. */
  signal?: AbortSignal;
  /** After a stop request, how long to wait for the engine to report a terminal state. */
  stopGraceMs?: number;
  /** Lines of the job's log kept in a failure's reason. */
  tailLines?: number;
}

export interface JobRun {
  id: string;
  state: JobState;
  /** Milliseconds: the submit request, and from acceptance to the terminal state. */
  submitMs: number;
  runMs: number;
}

/** The last `lines` lines of a log, at most 4000 characters (a reason is read by people). */
export function logTail(text: string, lines = 30): string {
  const tail = text.split('\n').filter((l) => l.trim() !== '').slice(-lines).join('\n');
  return tail.length > 4000 ? `…${tail.slice(-4000)}` : tail;
}

/** The tail of a job's log for a reason; a log that cannot be read says so instead (the round's reason must still be written). */
export async function jobLogTail(trainer: RemoteTrainer, id: string, lines = 30): Promise<string> {
  try {
    const t = logTail(await trainer.logs(id), lines);
    return t === '' ? '(empty)' : t;
  } catch (err) {
    return `(the job's log could not be read: ${errorMessage(err)})`;
  }
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> => new Promise((resolve) => {
  const t = setTimeout(done, ms);
  function done(): void { clearTimeout(t); signal?.removeEventListener('abort', done); resolve(); }
  signal?.addEventListener('abort', done, { once: true });
});

export async function runJob(trainer: RemoteTrainer, job: JobSubmission, opts: RunJobOptions): Promise<JobRun> {
  const log = opts.log.child({ trainer: trainer.id, job: job.id });
  const tailLines = opts.tailLines ?? 30;
  const t0 = Date.now();
  await trainer.submit(job, opts.signal);
  const submitMs = Date.now() - t0;
  const t1 = Date.now();
  log.info('training job submitted', { ms: submitMs });

  const fail = async (what: string, action: string): Promise<never> => {
    throw new AligndError('TRAINER_FAILED', `training job ${job.id} on ${trainer.id} ${what}; log tail:\n${await jobLogTail(trainer, job.id, tailLines)}`, { action });
  };
  /** Stop the job and wait (bounded) for the engine to confirm; a stop that cannot be sent is logged, the round ends anyway. */
  const stopAndWait = async (): Promise<JobState | null> => {
    try {
      await trainer.stop(job.id);
    } catch (err) {
      log.error('stopping the training job failed; it may still run on the cluster', { err: errorMessage(err) });
      return null;
    }
    const until = Date.now() + (opts.stopGraceMs ?? 30_000);
    while (Date.now() < until) {
      try {
        const s = await trainer.status(job.id);
        if (TERMINAL_STATES.has(s.state)) return s.state;
      } catch { /* keep asking until the grace ends */ }
      await sleep(Math.min(opts.pollMs, 1000));
    }
    return null;
  };

  const aborted = (): boolean => opts.signal?.aborted === true;
  let pollErrors = 0;
  for (;;) {
    if (aborted()) {
      const state = await stopAndWait();
      log.warn('training job cancelled: alignd is shutting down', { state });
      return fail(`was cancelled because alignd is shutting down (state after the stop request: ${state ?? 'unknown'})`,
        'the round is discarded and the deployed version untouched; the next round trains on the window again (as replay)');
    }
    if (Date.now() - t1 > opts.timeoutMs) {
      const state = await stopAndWait();
      log.warn('training job timed out and was stopped', { state, timeoutMs: opts.timeoutMs });
      return fail(`did not finish within trainer.timeout_s (${Math.round(opts.timeoutMs / 1000)} s) and was stopped (state: ${state ?? 'unknown'})`,
        'raise trainer.timeout_s, lower objective.max_steps, or give the cluster more workers');
    }
    let state: JobState;
    let message: string | null = null;
    try {
      ({ state, message } = await trainer.status(job.id, opts.signal));
      pollErrors = 0;
    } catch (err) {
      if (aborted()) continue;
      // A dashboard restart or a network blip must not end a long job: give up after 5 in a row.
      if (++pollErrors >= 5) {
        await stopAndWait();
        return fail(`could not be polled (${errorMessage(err)})`, `check that the Ray dashboard at ${trainer.id} is reachable from alignd`);
      }
      log.warn('polling the training job failed; retrying', { err: errorMessage(err), attempt: pollErrors });
      await sleep(opts.pollMs, opts.signal);
      continue;
    }
    if (state === 'SUCCEEDED') {
      const runMs = Date.now() - t1;
      log.info('training job succeeded', { ms: runMs });
      return { id: job.id, state, submitMs, runMs };
    }
    if (state === 'FAILED' || state === 'STOPPED') {
      return fail(`ended ${state}${message === null || message === '' ? '' : ` (${message})`}`,
        'the round is discarded and the deployed version untouched; read the job\'s log on the cluster for the full trace');
    }
    await sleep(opts.pollMs, opts.signal);
  }
}
