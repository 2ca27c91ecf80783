/**
 * Server targets from a policy's `servers` list (used by the composition root). Secrets come from
 * the environment variables the policy names.
 */
import { AligndError } from '../../daemon/base/errors.js';
import type { Policy, ServerTargetConfig } from '../../daemon/policy/schema.js';
import type { ServingEngine } from '../../daemon/registry/serving-engine.js';
import type { ServerTarget } from '../../daemon/registry/targets.js';
import { fileDropTarget } from './file-drop.js';
import { vllmTarget } from './vllm.js';
import { vllmEngine } from './vllm-eval.js';
import { webhookTarget } from './webhook.js';

/**
 * Target ids name urls without their secrets, so two targets that differ only in a token would
 * share one; the later ones get `#2`, `#3`: each keeps its own state in deployed.json.
 */
export function serverTargets(configs: readonly ServerTargetConfig[], env: NodeJS.ProcessEnv = process.env): ServerTarget[] {
  const seen = new Map<string, number>();
  return buildTargets(configs, env).map((t) => {
    const n = (seen.get(t.id) ?? 0) + 1;
    seen.set(t.id, n);
    return n === 1 ? t : { ...t, id: `${t.id}#${n}` };
  });
}

function buildTargets(configs: readonly ServerTargetConfig[], env: NodeJS.ProcessEnv): ServerTarget[] {
  return configs.flatMap((c): ServerTarget[] => {
    switch (c.kind) {
      case 'vllm': {
        const apiKey = c.api_key_env === undefined ? undefined : env[c.api_key_env];
        if (c.api_key_env !== undefined && apiKey === undefined) throw new AligndError('CONFIG_INVALID', `vLLM target needs ${c.api_key_env}, which is not set`, { action: `export ${c.api_key_env}` });
        return c.urls.map((url) => vllmTarget({ url, timeoutMs: c.timeout_s * 1000, ...(c.path_map === undefined ? {} : { pathMap: c.path_map }), ...(apiKey === undefined ? {} : { apiKey }) }));
      }
      case 'file_drop':
        return [fileDropTarget({ dir: c.dir })];
      case 'webhook': {
        const secret = env[c.secret_env];
        if (secret === undefined || secret === '') throw new AligndError('CONFIG_INVALID', `webhook target needs ${c.secret_env}, which is not set`, { action: `export ${c.secret_env}` });
        return [webhookTarget({ url: c.url, secret, timeoutMs: c.timeout_s * 1000 })];
      }
    }
  });
}

/**
 * The serving engine that evaluates a policy's candidates (evaluation.engine: serving): the vLLM
 * server at evaluation.url, else the first url of the policy's vllm target, whose path_map and
 * api key apply to both.
 */
export function servingEngine(p: Policy, env: NodeJS.ProcessEnv = process.env): ServingEngine {
  const target = p.servers.find((s): s is Extract<ServerTargetConfig, { kind: 'vllm' }> => s.kind === 'vllm' && (p.evaluation.url === undefined || s.urls.includes(p.evaluation.url)));
  const url = p.evaluation.url ?? target?.urls[0];
  if (url === undefined) throw new AligndError('CONFIG_INVALID', 'evaluation.engine serving needs a vLLM server', { action: 'set evaluation.url or add a vllm server target' });
  const apiKey = target?.api_key_env === undefined ? undefined : env[target.api_key_env];
  return vllmEngine({ url, ...(target?.path_map === undefined ? {} : { pathMap: target.path_map }), ...(apiKey === undefined ? {} : { apiKey }),
    ...(target === undefined ? {} : { timeoutMs: target.timeout_s * 1000 }) });
}
