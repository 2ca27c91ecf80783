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
import type { DeployRequest, ServerTarget } from '../../daemon/registry/targets.js';
import { bodyText, fetchWithTimeout } from './http-json.js';

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

function explain(url: string, op: string, status: number, body: string, path?: string): AligndError {
  const msg = vllmErrorMessage(body);
  let action: string;
  if (status === 404 && /^not found$/i.test(msg)) action = 'runtime LoRA updating is off: start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True';
  else if (status === 404) action = `vLLM cannot read the adapter at ${path ?? '(path)'}: the registry must be mounted where vLLM runs (set path_map in the policy's vllm target)`;
  else if (status === 401 || status === 403) action = 'vLLM wants an API key: set api_key_env in the policy\'s vllm target';
  else if (status === 400 && /rank/i.test(msg)) action = 'the adapter rank exceeds vLLM\'s --max-lora-rank: raise it, or lower lora.r in the policy';
  else if (status === 400) action = 'vLLM refused the adapter: check --enable-lora, --max-loras and that the adapter is plain LoRA for the served base model';
  else action = 'vLLM failed; check its logs';
  return new AligndError('SERVER_FAILED', `vLLM ${url} ${op} failed with HTTP ${status}: ${msg}`, { action });
}

export function vllmTarget(cfg: VllmTargetConfig): ServerTarget {
  const base = cfg.url.replace(/\/+$/, '');
  const timeout = cfg.timeoutMs ?? 60_000;
  const headers: Record<string, string> = { 'content-type': 'application/json', ...(cfg.apiKey === undefined ? {} : { authorization: `Bearer ${cfg.apiKey}` }) };
  const mapPath = (p: string): string => (cfg.pathMap !== undefined && p.startsWith(cfg.pathMap.from) ? cfg.pathMap.to + p.slice(cfg.pathMap.from.length) : p);

  const call = async (op: string, path: string, body?: unknown): Promise<Response> => {
    try {
      return await fetchWithTimeout(`${base}${path}`, body === undefined ? { headers } : { method: 'POST', headers, body: JSON.stringify(body) }, timeout);
    } catch (err) {
      throw new AligndError('SERVER_FAILED', `vLLM ${base} ${op}: cannot connect (${(err as Error).message})`, { action: 'check that vLLM runs and that the url in the policy is right', cause: err });
    }
  };
  const models = async (): Promise<ModelEntry[]> => {
    const res = await call('GET /v1/models', '/v1/models');
    const text = await bodyText(res);
    if (!res.ok) throw explain(base, 'GET /v1/models', res.status, text);
    try {
      const j = JSON.parse(text) as { data?: ModelEntry[] };
      return Array.isArray(j.data) ? j.data : [];
    } catch (err) {
      throw new AligndError('SERVER_FAILED', `vLLM ${base} GET /v1/models answered non-JSON`, { action: 'is the url a vLLM OpenAI-compatible server?', cause: err });
    }
  };

  return {
    id: `vllm:${base}`,
    async deploy(req: DeployRequest) {
      const loraPath = mapPath(req.adapterDir);
      const listed = (await models()).find((m) => m.id === req.name);
      if (listed === undefined) {
        const res = await call('load', '/v1/load_lora_adapter', { lora_name: req.name, lora_path: loraPath });
        const text = await bodyText(res);
        // 400 "already loaded": another alignd instance or an earlier attempt won; verified below.
        if (!res.ok && !(res.status === 400 && /already/i.test(vllmErrorMessage(text)))) throw explain(base, `loading ${req.name}`, res.status, text, loraPath);
      }
      const after = (await models()).find((m) => m.id === req.name);
      if (after === undefined) throw new AligndError('SERVER_FAILED', `vLLM ${base} accepted ${req.name} but does not list it in /v1/models`, { action: 'check vLLM logs; the adapter may have failed to load' });
      if (typeof after.root === 'string' && after.root !== loraPath) {
        throw new AligndError('SERVER_FAILED', `vLLM ${base} serves ${req.name} from ${after.root}, not ${loraPath}`, { action: 'a different adapter holds this immutable name; unload it by hand and investigate' });
      }
    },
    async retire(model, keep) {
      const re = new RegExp(`^${model.replace(/[.]/g, '\\.')}-v[0-9]+$`);
      const drop = (await models()).map((m) => m.id).filter((id) => re.test(id) && !keep.includes(id));
      const done: string[] = [];
      for (const name of drop) {
        const res = await call('unload', '/v1/unload_lora_adapter', { lora_name: name });
        const text = await bodyText(res);
        if (res.ok || res.status === 404) done.push(name);
        else throw explain(base, `unloading ${name}`, res.status, text);
      }
      return done;
    },
  };
}
