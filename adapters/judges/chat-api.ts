/**
 * The slice of the OpenAI chat-completions API a judge uses (POST <url>/chat/completions, as vLLM,
 * TGI, llama.cpp's server and OpenAI serve it), with what a judge in a gate needs around it: a
 * timeout per attempt, retries with exponential backoff and full jitter (Brooker, "Exponential
 * backoff and jitter", AWS Architecture Blog 2015) on what a retry can fix (a timeout, a refused
 * connection, 408, 429, 5xx), and a cap on requests in flight. Answers are checked with zod: a
 * malformed body is an error, never a verdict.
 */
import { z } from 'zod';

export interface ChatMessage { role: 'system' | 'user' | 'assistant'; content: string }

export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  max_tokens: number;
  temperature: number;
  logprobs?: boolean;
  top_logprobs?: number;
  /** vLLM's extension: the answer constrained by a grammar (here a regular expression). */
  structured_outputs?: { regex: string };
}

const topLogprob = z.looseObject({ token: z.string(), logprob: z.number() });
export const chatResponseSchema = z.looseObject({
  choices: z.array(z.looseObject({
    message: z.looseObject({ content: z.string().nullable().optional(), refusal: z.string().nullable().optional() }),
    finish_reason: z.string().nullable().optional(),
    logprobs: z.looseObject({
      content: z.array(z.looseObject({ token: z.string(), logprob: z.number(), top_logprobs: z.array(topLogprob).optional() })).nullable().optional(),
    }).nullable().optional(),
  })).min(1),
});
export type ChatResponse = z.infer<typeof chatResponseSchema>;
export type TokenLogprob = NonNullable<NonNullable<ChatResponse['choices'][number]['logprobs']>['content']>[number];

export interface ChatClientOptions {
  /** Base URL, e.g. http://guard:8000/v1. */
  url: string;
  apiKey?: string;
  timeoutMs: number;
  /** Attempts after the first. */
  retries: number;
  maxConcurrency: number;
  /** Backoff: attempt k waits uniform(0, min(maxDelayMs, baseDelayMs·2^(k−1))). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  random?: () => number;
  onRetry?: (err: string, attempt: number) => void;
}

/** A failure a retry may fix. */
class Transient extends Error {}

/** A counting semaphore: at most `n` holders. */
function semaphore(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let free = n;
  const waiting: Array<() => void> = [];
  return async (fn) => {
    if (free > 0) free--;
    else await new Promise<void>((r) => waiting.push(r));
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next !== undefined) next();
      else free++;
    }
  };
}

export interface ChatClient {
  complete(req: ChatRequest): Promise<ChatResponse>;
  /** HTTP requests sent (every attempt counts). */
  readonly requests: number;
}

export function chatClient(o: ChatClientOptions): ChatClient {
  const endpoint = `${o.url.replace(/\/+$/, '')}/chat/completions`;
  const limit = semaphore(o.maxConcurrency);
  const random = o.random ?? Math.random;
  const base = o.baseDelayMs ?? 250;
  const max = o.maxDelayMs ?? 5000;
  let requests = 0;

  async function attempt(req: ChatRequest): Promise<ChatResponse> {
    requests++;
    let res: Response;
    try {
      res = await fetch(endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(o.apiKey === undefined ? {} : { authorization: `Bearer ${o.apiKey}` }) },
        body: JSON.stringify(req),
        signal: AbortSignal.timeout(o.timeoutMs),
      });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      if (e.name === 'TimeoutError' || e.name === 'AbortError') throw new Transient(`no answer within ${o.timeoutMs / 1000} s (timeout_s)`);
      throw new Transient(`cannot reach ${endpoint}: ${e.cause?.code ?? e.message}`);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      const e = err as Error;
      throw new Transient(e.name === 'TimeoutError' || e.name === 'AbortError' ? `answer not complete within ${o.timeoutMs / 1000} s (timeout_s)` : `answer cut off: ${e.message}`);
    }
    if (!res.ok) {
      const msg = `HTTP ${res.status} from ${endpoint}: ${text.slice(0, 300)}`;
      if (res.status === 408 || res.status === 429 || res.status >= 500) throw new Transient(msg);
      throw new Error(res.status === 401 || res.status === 403 ? `${msg} (check api_key)` : msg);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`the answer is not JSON: ${JSON.stringify(text.slice(0, 200))}`);
    }
    const r = chatResponseSchema.safeParse(json);
    if (!r.success) throw new Error(`the answer is not a chat completion (${r.error.issues[0]?.path.join('.') ?? ''}: ${r.error.issues[0]?.message ?? ''})`);
    return r.data;
  }

  return {
    get requests() { return requests; },
    complete: (req) => limit(async () => {
      for (let k = 0; ; k++) {
        try {
          return await attempt(req);
        } catch (err) {
          if (!(err instanceof Transient) || k >= o.retries) throw new Error(k === 0 ? (err as Error).message : `${(err as Error).message} (after ${k + 1} attempts)`);
          o.onRetry?.((err as Error).message, k + 1);
          await new Promise((r) => setTimeout(r, random() * Math.min(max, base * 2 ** k)));
        }
      }
    }),
  };
}
