/**
 * A safety judge behind an OpenAI-compatible chat-completions API (vLLM, TGI, llama.cpp, OpenAI):
 * a guard model (Llama Guard 3 format, llama-guard.ts) or an instruct model reasoning over the
 * policy's written specification (deliberative.ts).
 *
 * Every response is judged by its own request, at most `maxConcurrency` at a time, each with a
 * timeout and retries (chat-api.ts). Any failure — transport, timeout, HTTP error, a malformed or
 * unparsable or refused answer — gives an `error` verdict (uncertain, p = 1): never a safe one.
 * Verdicts are cached by sha256 of (judge identity, specification, prompt, response), so a
 * deployed version's unchanged answers are not judged again every round; failures are not cached.
 */
import { createHash } from 'node:crypto';
import { AligndError, errorMessage } from '../../daemon/base/errors.js';
import type { Logger } from '../../daemon/base/log.js';
import type { NamedJudge, SafetyVerdict } from '../../daemon/gate/evidence.js';
import { chatClient, type ChatMessage, type ChatRequest, type ChatResponse } from './chat-api.js';
import { GUARD_ANSWER_REGEX, conversationMessages, guardTaskMessages, parseGuardAnswer, pUnsafeFromLogprobs } from './llama-guard.js';
import { deliberativeMessages, parseDeliberativeAnswer } from './deliberative.js';

export interface OpenAiJudgeConfig {
  name: string;
  /** Base URL of the API, e.g. http://guard:8000/v1. */
  url: string;
  model: string;
  apiKey?: string;
  style: 'guard' | 'deliberative';
  /** guard style: `server` sends the conversation (the guard's chat template writes the task); `alignd` writes it. */
  template: 'server' | 'alignd';
  /** guard style: constrain the answer to the verdict grammar with vLLM's `structured_outputs` extension. */
  structuredOutput?: boolean;
  /** The written safety specification (deliberative style). */
  spec?: string;
  timeoutMs: number;
  maxConcurrency: number;
  retries: number;
  maxTokens?: number;
  /** Verdicts kept in the cache (oldest dropped first). */
  cacheSize?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
}

/** p(unsafe) given for a guard verdict read from text alone (no log-probabilities returned): a softer score than a measured one. */
export const TEXT_VERDICT_P = { unsafe: 0.8, safe: 0.2 } as const;

export interface OpenAiJudge extends NamedJudge {
  stats(): { requests: number; cacheHits: number; judged: number; failed: number };
}

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

export function openAiCompatibleJudge(c: OpenAiJudgeConfig, deps: { log: Logger }): OpenAiJudge {
  if (c.style === 'deliberative' && (c.spec === undefined || c.spec.trim() === '')) {
    throw new AligndError('CONFIG_INVALID', `judge ${c.name}: the deliberative style needs the written safety specification`, { action: 'set spec_file on the judge in the policy' });
  }
  const log = deps.log.child({ judge: c.name });
  const client = chatClient({
    url: c.url, timeoutMs: c.timeoutMs, retries: c.retries, maxConcurrency: c.maxConcurrency,
    ...(c.apiKey === undefined ? {} : { apiKey: c.apiKey }),
    ...(c.baseDelayMs === undefined ? {} : { baseDelayMs: c.baseDelayMs }),
    ...(c.maxDelayMs === undefined ? {} : { maxDelayMs: c.maxDelayMs }),
    onRetry: (err, attempt) => log.debug('judge request failed; retrying', { attempt, err }),
  });
  const maxTokens = c.maxTokens ?? (c.style === 'guard' ? 16 : 1024);
  const structured = c.style === 'guard' && c.structuredOutput === true;
  const identity = sha256(JSON.stringify([c.url, c.model, c.style, c.template, structured, maxTokens, c.spec === undefined ? null : sha256(c.spec)]));
  const cacheSize = c.cacheSize ?? 20_000;
  const cache = new Map<string, SafetyVerdict>();
  const inFlight = new Map<string, Promise<SafetyVerdict>>();
  const counts = { cacheHits: 0, judged: 0, failed: 0 };

  function request(prompt: string, response: string): ChatRequest {
    const messages: ChatMessage[] = c.style === 'deliberative' ? deliberativeMessages(c.spec!, prompt, response)
      : c.template === 'server' ? conversationMessages(prompt, response) : guardTaskMessages(prompt, response);
    return {
      model: c.model, messages, max_tokens: maxTokens, temperature: 0,
      ...(c.style === 'guard' ? { logprobs: true, top_logprobs: 5 } : {}),
      ...(structured ? { structured_outputs: { regex: GUARD_ANSWER_REGEX } } : {}),
    };
  }

  function verdictOf(res: ChatResponse): SafetyVerdict {
    const choice = res.choices[0]!;
    const text = choice.message.content ?? '';
    if (text.trim() === '' && (choice.message.refusal ?? '') !== '') throw new Error(`the judge refused: ${choice.message.refusal!.slice(0, 160)}`);
    if (c.style === 'deliberative') {
      const a = parseDeliberativeAnswer(text);
      if ('error' in a) throw new Error(choice.finish_reason === 'length' ? `${a.error} (cut at max_tokens ${maxTokens})` : a.error);
      return { pUnsafe: a.unsafe ? a.confidence : 1 - a.confidence, uncertain: false, ...(a.unsafe && a.category !== undefined ? { category: a.category } : {}) };
    }
    const a = parseGuardAnswer(text);
    if ('error' in a) throw new Error(a.error);
    const lp = choice.logprobs?.content;
    const measured = lp === null || lp === undefined ? null : pUnsafeFromLogprobs(lp);
    const pUnsafe = measured ?? (a.unsafe ? TEXT_VERDICT_P.unsafe : TEXT_VERDICT_P.safe);
    return { pUnsafe, uncertain: false, ...(a.unsafe && a.categories.length > 0 ? { category: a.categories.join(',') } : {}) };
  }

  async function judgeOne(prompt: string, response: string): Promise<SafetyVerdict> {
    const key = sha256(JSON.stringify([identity, prompt, response]));
    const hit = cache.get(key);
    if (hit !== undefined) {
      counts.cacheHits++;
      return hit;
    }
    let p = inFlight.get(key);
    if (p === undefined) {
      p = client.complete(request(prompt, response)).then(verdictOf).then((v) => {
        cache.set(key, v);
        if (cache.size > cacheSize) cache.delete(cache.keys().next().value!);
        counts.judged++;
        return v;
      }, (err: unknown): SafetyVerdict => {
        counts.failed++;
        return { pUnsafe: 1, uncertain: true, error: `judge ${c.name}: ${errorMessage(err)}` };
      }).finally(() => inFlight.delete(key));
      inFlight.set(key, p);
    } else counts.cacheHits++;
    return p;
  }

  return {
    name: c.name,
    async judge(prompts, responses) {
      const out = await Promise.all(responses.map((r, i) => judgeOne(prompts[i] ?? '', r)));
      const failed = out.filter((v) => v.error !== undefined);
      if (failed.length > 0) log.warn('judge gave no verdict on some responses', { failed: failed.length, of: out.length, first: failed[0]!.error });
      return out;
    },
    stats: () => ({ requests: client.requests, ...counts }),
  };
}
