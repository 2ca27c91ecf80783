/**
 * GET /v1/models/:model/probation — the open probation of a model (both versions' live signals,
 * the confidence sequences of each and of their difference, their timeline) or its last decided
 * one with the figures it was decided on; `probation: null` when the model never had one.
 */
import { sendJson, type Route } from '../http/route.js';
import type { CanaryMonitor } from './monitor.js';

export function probationRoutes(monitor: CanaryMonitor, models: () => string[]): Route[] {
  return [{
    method: 'GET', path: '/v1/models/:model/probation', handler: (_q, res, p) => {
      const model = p['model'] ?? '';
      if (!models().includes(model)) return sendJson(res, 404, { error: `no policy for model ${JSON.stringify(model)}` });
      sendJson(res, 200, { model, probation: monitor.view(model) });
    },
  }];
}
