/**
 * Typed errors. Every error alignd raises says what failed, on which input, and what to do,
 * so that a person paged at 3 a.m. can act on the message alone.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'EVENT_INVALID'
  | 'EVENT_OVERSIZE'
  | 'STORE_FAILED'
  | 'SOURCE_FAILED'
  | 'ENGINE_INVALID_GRAPH'
  | 'ENGINE_PROVIDER_MISSING'
  | 'ENGINE_RUN_FAILED'
  | 'MODEL_INVALID'
  | 'MODEL_UNSUPPORTED'
  | 'ADAPTER_INVALID'
  | 'TRAINING_DIVERGED'
  | 'ROUND_ABANDONED'
  | 'POLICY_INVALID'
  | 'SERVER_FAILED'
  | 'JUDGE_UNAVAILABLE'
  | 'TRAINER_FAILED'
  | 'LEASE_LOST'
  | 'REQUEST_TOO_LARGE'
  | 'REQUEST_INVALID'
  | 'INTERNAL';

export class AligndError extends Error {
  readonly code: ErrorCode;
  /** What the operator should do about it. */
  readonly action: string | undefined;
  readonly input: string | undefined;
  /** true: trying again cannot help until something else changes (a config or capacity mismatch). */
  readonly permanent: boolean;

  constructor(code: ErrorCode, message: string, opts: { action?: string; input?: string; cause?: unknown; permanent?: boolean } = {}) {
    const parts = [message];
    if (opts.input !== undefined) parts.push(`(input: ${opts.input})`);
    if (opts.action !== undefined) parts.push(`— ${opts.action}`);
    super(parts.join(' '), opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AligndError';
    this.code = code;
    this.action = opts.action;
    this.input = opts.input;
    this.permanent = opts.permanent ?? false;
  }
}

/** Message of any thrown value, for logs and error answers. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Whether retrying `err` is pointless (an AligndError marked permanent). */
export function isPermanent(err: unknown): boolean {
  return err instanceof AligndError && err.permanent;
}
