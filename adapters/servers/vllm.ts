/**
 * vLLM runtime LoRA adapters (server started with --enable-lora and
 * VLLM_ALLOW_RUNTIME_LORA_UPDATING=True):
 *   POST /v1/load_lora_adapter   {lora_name, lora_path}  → 200 plain text
 *   POST /v1/unload_lora_adapter {lora_name}
 *   GET  /v1/models  → data[] with id, parent (base) and root (adapter path)
 * Names are immutable (`<model>-vN`): vLLM may serve stale prefix-cache entries when a name is
 * reloaded in place, so a version already listed is verified, never reloaded.
 * Errors come as {"error": {message, type, code}} or, from older builds, top-level
 * {message, type, code}; FastAPI's {"detail": "Not Found"} means the routes are off.
 */
import { AligndError } from '../../daemon/base/errors.js';
import { redactUrl } from '../../daemon/base/redact.js';
import type { DeployRequest, ServerTarget } from '../../daemon/registry/targets.js';
import { servedNamePattern } from '../../daemon/base/names.js';
import { errorBody, excerpt, fetchWithTimeout, readBody } from '../../daemon/base/http-json.js';

export interface VllmTargetConfig {
  url: string;
  /**
   * Map alignd's registry path to the path vLLM sees (shared volume mounted elsewhere):
   * `{from: "/data/registry", to: "/mnt/registry"}`. Unset: the same path.
   */
  pathMap?: { from: string; to: string };
  /** Bearer token when vLLM runs with --api-key. */
  apiKey?: string;
  timeoutMs?: number;
}

interface ModelEntry { id: string; root?: string | null; parent?: string | null }

/** The message of a vLLM error body, whichever shape it has. */
export function vllmErrorMessage(body: string): string {
  try {
    const j = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown; detail?: unknown };
    if (typeof j.error === 'object' && j.error !== null && typeof j.error.message === 'string') return j.error.message;
    if (typeof j.error === 'string') return j.error;
    if (typeof j.message === 'string') return j.message;
    if (typeof j.detail === 'string') return j.detail;
  } catch { /* plain text */ }
  return body.trim() || '(empty body)';
}

/** A rank above the server's --max-lora-rank: vLLM 0.32 answers 500, older builds 400. */
const RANK_TOO_LARGE = /rank \d+ is greater than max_lora_rank \d+/i;

function explain(url: string, op: string, status: number, body: string, path?: string): AligndError {
  const msg = vllmErrorMessage(body);
  let action: string;
  // A 400 or a rank refusal fails the same way on every retry: permanent until the policy or the server changes.
  let permanent = false;
  if (RANK_TOO_LARGE.test(msg)) {
    action = 'the adapter rank exceeds vLLM\'s --max-lora-rank: restart vLLM with a larger --max-lora-rank, or lower lora.r in the policy (not retried until the desired version changes)';
    permanent = true;
  } else if (status === 404 && /^not found$/i.test(msg)) action = 'runtime LoRA updating is off: start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True';
  else if (status === 404) action = `vLLM cannot read the adapter at ${path ?? '(path)'}: the registry must be mounted where vLLM runs (set path_map in the policy's vllm target)`;
  else if (status === 401 || status === 403) action = 'vLLM wants an API key: set api_key_env in the policy\'s vllm target';
  else if (status === 400) {
    action = 'vLLM refused the adapter: check --enable-lora, --max-loras and that the adapter is plain LoRA for the served base model';
    permanent = true;
  } else action = 'vLLM failed; check its logs';
  return new AligndError('SERVER_FAILED', `vLLM ${url} ${op} failed with HTTP ${status}: ${excerpt(msg)}`, { action, permanent });
}

export function vllmTarget(cfg: VllmTargetConfig): ServerTarget {
  const base = cfg.url.replace(/\/+$/, '');
  const shown = redactUrl(base); // ids and messages never carry the url's credentials or tokens
  const timeout = cfg.timeoutMs ?? 60_000;
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(cfg.apiKey === undefined ? {} : { authorization: `Bearer ${cfg.apiKey}` }) };
  const mapPath = (p: string): string => (cfg.pathMap !== undefined && p.startsWith(cfg.pathMap.from) ? cfg.pathMap.to + p.slice(cfg.pathMap.from.length) : p);

  const call = async (op: string, path: string, signal: AbortSignal | undefined, body?: unknown): Promise<Response> => {
    try {
      return await fetchWithTimeout(`${base}${path}`, body === undefined ? { headers } : { method: 'POST', headers, body: JSON.stringify(body) }, timeout, signal);
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason as Error;
      throw new AligndError('SERVER_FAILED', `vLLM ${shown} ${op}: cannot connect (${(err as Error).message})`, { action: 'check that vLLM runs and that the url in the policy is right', cause: err });
    }
  };
  const models = async (signal?: AbortSignal): Promise<ModelEntry[]> => {
    const res = await call('GET /v1/models', '/v1/models', signal);
    if (!res.ok) throw explain(shown, 'GET /v1/models', res.status, await errorBody(res, `vLLM ${shown} GET /v1/models`));
    const text = await readBody(res, `vLLM ${shown} GET /v1/models`);
    let j: { data?: unknown };
    try {
      j = JSON.parse(text) as { data?: unknown };
    } catch (err) {
      throw new AligndError('SERVER_FAILED', `vLLM ${shown} GET /v1/models answered non-JSON: ${excerpt(text, 200)}`, { action: 'is the url a vLLM OpenAI-compatible server?', cause: err });
    }
    if (!Array.isArray(j.data)) throw new AligndError('SERVER_FAILED', `vLLM ${shown} GET /v1/models has no data list: ${excerpt(text, 200)}`, { action: 'is the url a vLLM OpenAI-compatible server?' });
    return (j.data as unknown[]).filter((m): m is ModelEntry => typeof m === 'object' && m !== null && typeof (m as ModelEntry).id === 'string');
  };

  return {
    id: `vllm:${shown}`,
    timeoutMs: timeout,
    async observe(model, signal) {
      const re = servedNamePattern(model);
      return (await models(signal)).map((m) => m.id).filter((id) => re.test(id));
    },
    async deploy(req: DeployRequest, signal?: AbortSignal) {
      const loraPath = mapPath(req.adapterDir);
      const listed = (await models(signal)).find((m) => m.id === req.name);
      if (listed === undefined) {
        const res = await call('load', '/v1/load_lora_adapter', signal, { lora_name: req.name, lora_path: loraPath });
        const text = res.ok ? '' : await errorBody(res, `vLLM ${shown} loading ${req.name}`);
        // 400 "already loaded": another alignd instance or an earlier attempt won; verified below.
        if (!res.ok && !(res.status === 400 && /already/i.test(vllmErrorMessage(text)))) throw explain(shown, `loading ${req.name}`, res.status, text, loraPath);
        if (res.ok) await res.body?.cancel();
      }
      const after = (await models(signal)).find((m) => m.id === req.name);
      if (after === undefined) throw new AligndError('SERVER_FAILED', `vLLM ${shown} accepted ${req.name} but does not list it in /v1/models`, { action: 'check vLLM logs; the adapter may have failed to load' });
      if (typeof after.root === 'string' && after.root !== loraPath) {
        throw new AligndError('SERVER_FAILED', `vLLM ${shown} serves ${req.name} from ${after.root}, not ${loraPath}`, { action: 'a different adapter holds this immutable name; unload it by hand and investigate' });
      }
    },
    async retire(model, keep, signal) {
      const re = servedNamePattern(model);
      const drop = (await models(signal)).map((m) => m.id).filter((id) => re.test(id) && !keep.includes(id));
      const done: string[] = [];
      for (const name of drop) {
        const res = await call('unload', '/v1/unload_lora_adapter', signal, { lora_name: name });
        if (res.ok || res.status === 404) {
          await res.body?.cancel();
          done.push(name);
        } else throw explain(shown, `unloading ${name}`, res.status, await errorBody(res, `vLLM ${shown} unloading ${name}`));
      }
      return done;
    },
  };
}
