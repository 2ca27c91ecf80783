/**
 * Webhook target: a JSON POST per promotion, signed with HMAC-SHA256 over `<timestamp>.<body>`
 * (the timestamp in `x-alignd-timestamp` lets receivers refuse replays). Header
 * `x-alignd-signature: sha256=<hex>`. Any 2xx is success. During a staged rollout `canary`
 * says which share of traffic the router sends to `name` ({weight, baseline, baseline_name}); it is
 * sent again with `canary: null` when probation ends stable.
 */
import { createHmac } from 'node:crypto';
import { AligndError } from '../../daemon/base/errors.js';
import { redactUrl } from '../../daemon/base/redact.js';
import type { ServerTarget } from '../../daemon/registry/targets.js';
import { errorBody, fetchWithTimeout } from '../../daemon/base/http-json.js';

export function signWebhook(secret: string, timestamp: string, body: string): string {
  return 'sha256=' + createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

export function webhookTarget(cfg: { url: string; secret: string; timeoutMs?: number }): ServerTarget {
  const timeoutMs = cfg.timeoutMs ?? 30_000;
  const shown = redactUrl(cfg.url); // ids and messages never carry the url's credentials or tokens
  return {
    id: `webhook:${shown}`,
    timeoutMs,
    // No observe(): a receiver has no listing to read back, so the record of acknowledged pushes stands in.
    async deploy(req, signal) {
      const ts = new Date().toISOString();
      const body = JSON.stringify({
        schema: 'alignd.deploy/v1', model: req.model, version: req.version, name: req.name,
        adapter_path: req.adapterDir, adapter_sha256: req.adapterSha256, base_model: req.baseModel, ts,
        reason: req.reason ?? null, canary: req.canary ?? null,
      });
      let res: Response;
      try {
        res = await fetchWithTimeout(cfg.url, {
          method: 'POST', body,
          headers: { 'content-type': 'application/json', 'x-alignd-timestamp': ts, 'x-alignd-signature': signWebhook(cfg.secret, ts, body) },
        }, timeoutMs, signal);
      } catch (err) {
        if (signal?.aborted === true) throw signal.reason as Error;
        throw new AligndError('SERVER_FAILED', `webhook ${shown}: cannot connect (${(err as Error).message})`, { action: 'check the webhook url in the policy', cause: err });
      }
      if (!res.ok) throw new AligndError('SERVER_FAILED', `webhook ${shown} answered HTTP ${res.status}: ${await errorBody(res, `webhook ${shown}`)}`, { action: 'check the receiver; a 401/403 usually means the secret differs' });
      await res.body?.cancel();
    },
    async retire() {
      return [];
    },
  };
}
