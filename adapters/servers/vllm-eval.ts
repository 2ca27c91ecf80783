/**
 * vLLM as the gate's evaluator (daemon/registry/serving-engine.ts): candidates loaded under
 * private names through the runtime-LoRA routes, held-out log-probs from `prompt_logprobs` on
 * /v1/completions (token ids in, so alignd's tokenisation is the one scored), probe answers from
 * /v1/chat/completions (the checkpoint's chat template, as alignd's local responders use).
 * vLLM returns, per prompt position, the top-k tokens (rank ≤ k) plus the actual token.
 */
import { AligndError } from '../../daemon/base/errors.js';
import { errorBody, fetchWithTimeout, readBody } from '../../daemon/base/http-json.js';
import type { PositionLogprobs, Sampling, ServingEngine } from '../../daemon/registry/serving-engine.js';
import { vllmErrorMessage, type VllmTargetConfig } from './vllm.js';

type PromptLogprobEntry = Record<string, { logprob: number; rank?: number | null }> | null;

export function vllmEngine(cfg: VllmTargetConfig): ServingEngine {
  const base = cfg.url.replace(/\/+$/, '');
  const timeout = cfg.timeoutMs ?? 120_000;
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(cfg.apiKey === undefined ? {} : { authorization: `Bearer ${cfg.apiKey}` }) };
  const mapPath = (p: string): string => (cfg.pathMap !== undefined && p.startsWith(cfg.pathMap.from) ? cfg.pathMap.to + p.slice(cfg.pathMap.from.length) : p);

  async function post(op: string, body: unknown, signal?: AbortSignal): Promise<{ status: number; text: string }> {
    let res: Response;
    try {
      res = await fetchWithTimeout(`${base}${op}`, { method: 'POST', headers, body: JSON.stringify(body) }, timeout, signal);
    } catch (err) {
      throw new AligndError('SERVER_FAILED', `vLLM ${base} ${op}: cannot connect (${(err as Error).message})`, { action: 'check evaluation.url (or the policy\'s vllm server) and that vLLM runs', cause: err });
    }
    return { status: res.status, text: res.ok ? await readBody(res, `vLLM ${op}`) : await errorBody(res, `vLLM ${op}`) };
  }
  const fail = (op: string, r: { status: number; text: string }): AligndError =>
    new AligndError('SERVER_FAILED', `vLLM ${base} ${op} failed with HTTP ${r.status}: ${vllmErrorMessage(r.text)}`, { action: 'the candidate could not be evaluated on the serving engine; check vLLM\'s log' });

  return {
    id: `vllm:${base}`,
    async load(name, adapterDir, signal) {
      const r = await post('/v1/load_lora_adapter', { lora_name: name, lora_path: mapPath(adapterDir) }, signal);
      // A private name is never reused for other weights: one left by an interrupted round is the same adapter.
      if (r.status === 400 && /already (been )?loaded/i.test(vllmErrorMessage(r.text))) return;
      if (r.status !== 200) throw fail(`load ${name}`, r);
    },
    async unload(name) {
      const r = await post('/v1/unload_lora_adapter', { lora_name: name });
      if (r.status !== 200 && r.status !== 404) throw fail(`unload ${name}`, r);
    },
    async promptLogprobs(model, ids, topK, signal) {
      const r = await post('/v1/completions', { model, prompt: ids, max_tokens: 1, temperature: 0, prompt_logprobs: topK }, signal);
      if (r.status !== 200) throw fail(`prompt_logprobs on ${model}`, r);
      const pl = (JSON.parse(r.text) as { choices: Array<{ prompt_logprobs: PromptLogprobEntry[] }> }).choices[0]?.prompt_logprobs;
      if (!Array.isArray(pl) || pl.length !== ids.length) throw new AligndError('SERVER_FAILED', `vLLM ${base} answered prompt_logprobs of length ${Array.isArray(pl) ? pl.length : 'none'} for ${ids.length} tokens`, { action: 'is this a vLLM build with prompt_logprobs?' });
      return ids.slice(1).map((id, i): PositionLogprobs => {
        const entry = pl[i + 1] ?? {};
        const actual = entry[String(id)]?.logprob;
        if (actual === undefined) throw new AligndError('SERVER_FAILED', `vLLM ${base} returned no log-prob for token ${id} at position ${i + 1}`, { action: 'check that vLLM serves the same tokenizer as the base model' });
        const top = Object.entries(entry).filter(([, v]) => (v.rank ?? Infinity) <= topK).map(([k, v]): [number, number] => [Number(k), v.logprob]);
        return { actual, top };
      });
    },
    async complete(model, prompts, s: Sampling, signal) {
      const one = async (prompt: string, i: number): Promise<{ text: string; tokens: number }> => {
        const r = await post('/v1/chat/completions', { model, messages: [{ role: 'user', content: prompt }], max_tokens: s.maxTokens, temperature: s.temperature, top_p: s.topP, seed: s.seed + i }, signal);
        if (r.status !== 200) throw fail(`chat completion on ${model}`, r);
        const body = JSON.parse(r.text) as { choices: Array<{ message: { content: string | null } }>; usage?: { completion_tokens?: number } };
        const text = body.choices[0]?.message.content ?? '';
        if (typeof body.usage?.completion_tokens !== 'number') {
          throw new AligndError('SERVER_FAILED', `vLLM ${base} chat completion on ${model} returned no usage.completion_tokens`, { action: 'the gate measures answer lengths in generated tokens; use a vLLM that reports usage' });
        }
        return { text, tokens: body.usage.completion_tokens };
      };
      // One at a time, as the log-prob requests (daemon/loop/served-evidence.ts says why).
      const out: Array<{ text: string; tokens: number }> = [];
      for (const [i, p] of prompts.entries()) out.push(await one(p, i));
      return out;
    },
  };
}
