/**
 * Admin API over the registry and the gate, mounted by the composition root:
 *   GET  /v1/models/:model/versions                     versions with decisions
 *   GET  /v1/models/:model/deployment                   deployed pointer, per-target state, current name
 *   GET  /v1/models/:model/audit/verify                 audit chain check and head hash
 *   POST /v1/models/:model/versions/:version/approve    (admin) answer a held candidate
 *   POST /v1/models/:model/versions/:version/deny       (admin)
 * Approve/deny take an optional JSON body {by, note}. `onApproved` lets the daemon promote at once.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AligndError, errorMessage } from '../base/errors.js';
import { isBodyTooLarge, readJsonObject, sendJson, type Route } from '../http/route.js';
import { modelNameProblem } from '../base/names.js';
import { openRegistry, type Registry, type VersionInfo } from '../registry/registry.js';
import { approveCandidate, denyCandidate, effectiveDecision } from './decisions.js';

/** Largest approve/deny body ({by, note}). */
const MAX_ANSWER_BYTES = 65536;

export function gateRoutes(opts: { registryRoot: string; onApproved?: (reg: Registry, v: VersionInfo) => Promise<void> | void }): Route[] {
  // Only models that have a registry: a GET never creates directories.
  const reg = (model: string): Registry | undefined => (modelNameProblem(model) === undefined && existsSync(join(opts.registryRoot, model, 'versions'))
    ? openRegistry(opts.registryRoot, model) : undefined);
  const answer = (approve: boolean): Route['handler'] => async (req, res, p) => {
    const r = reg(p['model'] ?? '');
    if (r === undefined) return sendJson(res, 404, { error: `no registry for model ${JSON.stringify(p['model'])}` });
    let body: Record<string, unknown>;
    try {
      body = await readJsonObject(req, MAX_ANSWER_BYTES);
    } catch (err) {
      if (isBodyTooLarge(err)) return sendJson(res, 413, { error: errorMessage(err) });
      return sendJson(res, 400, { error: `body must be a JSON object {by, note}: ${errorMessage(err)}` });
    }
    const by = typeof body['by'] === 'string' ? body['by'] : 'admin-api';
    const note = typeof body['note'] === 'string' ? body['note'] : undefined;
    if (!r.has(p['version'] ?? '')) return sendJson(res, 404, { error: `${r.model} has no version ${JSON.stringify(p['version'])}` });
    let v: VersionInfo;
    try {
      v = await (approve ? approveCandidate : denyCandidate)(r, p['version'] ?? '', by, note);
    } catch (err) {
      return sendJson(res, err instanceof AligndError ? 409 : 500, { error: errorMessage(err) });
    }
    if (approve && opts.onApproved !== undefined) await opts.onApproved(r, v);
    sendJson(res, 200, { model: r.model, version: v.version, decision: effectiveDecision(v), approval: v.manifest.gate?.approval });
  };
  return [
    { method: 'GET', path: '/v1/models/:model/versions', handler: (_q, res, p) => {
      const r = reg(p['model'] ?? '');
      if (r === undefined) return sendJson(res, 404, { error: `no registry for model ${JSON.stringify(p['model'])}` });
      sendJson(res, 200, { model: r.model, versions: r.list().map((v) => ({ version: v.version, parent: v.manifest.parent, created_at: v.manifest.created_at, decision: effectiveDecision(v), gate: v.manifest.gate, probation: v.manifest.probation, adapter_sha256: v.manifest.adapter_sha256 })) });
    } },
    { method: 'GET', path: '/v1/models/:model/deployment', handler: (_q, res, p) => {
      const r = reg(p['model'] ?? '');
      if (r === undefined) return sendJson(res, 404, { error: `no registry for model ${JSON.stringify(p['model'])}` });
      const d = r.deployment();
      sendJson(res, 200, { model: r.model, current_name: d?.complete === true ? d.desired_name : null, deployment: d ?? null });
    } },
    { method: 'GET', path: '/v1/models/:model/audit/verify', handler: (_q, res, p) => {
      const r = reg(p['model'] ?? '');
      if (r === undefined) return sendJson(res, 404, { error: `no registry for model ${JSON.stringify(p['model'])}` });
      sendJson(res, 200, r.verifyAudit());
    } },
    { method: 'POST', path: '/v1/models/:model/versions/:version/approve', admin: true, handler: answer(true) },
    { method: 'POST', path: '/v1/models/:model/versions/:version/deny', admin: true, handler: answer(false) },
  ];
}
