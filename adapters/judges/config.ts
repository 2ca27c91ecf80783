/**
 * A policy's `safety.judges` entry (kind openai_compatible) as the judge takes it: the API key
 * read from the environment variable the policy names, the written specification read from its
 * file. The entry's shape is declared here structurally (this stage does not import the policy);
 * the composition root passes the policy's parsed entries, and the compiler checks they fit.
 */
import { readFileSync } from 'node:fs';
import { AligndError } from '../../daemon/base/errors.js';
import { resolveEnvRef } from '../../daemon/base/env.js';
import type { OpenAiJudgeConfig } from './openai-compatible.js';

export interface PolicyJudgeEntry {
  name?: string | undefined;
  url: string;
  model: string;
  api_key?: string | undefined;
  style: 'guard' | 'deliberative';
  template: 'server' | 'alignd';
  structured_output: boolean;
  /** Absolute once the policy has loaded. */
  spec_file?: string | undefined;
  timeout_s: number;
  max_concurrency: number;
  retries: number;
  max_tokens?: number | undefined;
}

export function judgeAdapterConfig(c: PolicyJudgeEntry, env: NodeJS.ProcessEnv = process.env): OpenAiJudgeConfig {
  const name = c.name ?? c.model;
  let spec: string | undefined;
  if (c.spec_file !== undefined) {
    try {
      spec = readFileSync(c.spec_file, 'utf8');
    } catch (err) {
      throw new AligndError('CONFIG_INVALID', `judge ${name}: cannot read spec_file ${c.spec_file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { action: 'restore the file or fix the path in the policy' });
    }
  }
  return {
    name, url: c.url, model: c.model, style: c.style, template: c.template, structuredOutput: c.structured_output,
    timeoutMs: c.timeout_s * 1000, maxConcurrency: c.max_concurrency, retries: c.retries,
    ...(c.api_key === undefined ? {} : { apiKey: resolveEnvRef(c.api_key, `judge ${name}: api_key`, env) }),
    ...(spec === undefined ? {} : { spec }),
    ...(c.max_tokens === undefined ? {} : { maxTokens: c.max_tokens }),
  };
}
