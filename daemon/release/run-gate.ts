/**
 * One gate run for a candidate already in the registry: gather the evidence through the stage
 * interfaces, decide, write the decision (figures and reasons) to the manifest and the audit log,
 * and push it when the policy's deployment mode allows. The loop calls this after a training round
 * has added the candidate.
 */
import { errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { silentLogger } from '../base/log.js';
import type { Policy } from '../policy/schema.js';
import type { PromoteOptions, PromoteResult } from '../registry/promote.js';
import type { Registry, VersionInfo } from '../registry/registry.js';
import { decide } from '../gate/decide.js';
import { promoteIfAllowed } from './deploy.js';
import { gatherEvidence, type EvaluationInputs } from '../gate/evaluate.js';
import { recordDecision } from './decisions.js';
import type { GateDecision } from '../gate/evidence.js';

export interface GateRun {
  version: VersionInfo;
  decision: GateDecision;
  promotion: PromoteResult | undefined;
}

export async function runGate(reg: Registry, candidate: string, policy: Policy, inputs: Omit<EvaluationInputs, 'benignPrompts' | 'redTeamPrompts'>,
  promotion: Omit<PromoteOptions, 'reason'> & { log?: Logger }, seed = 1): Promise<GateRun> {
  const log = promotion.log ?? silentLogger;
  let decision: GateDecision;
  try {
    const ev = await gatherEvidence({ ...inputs, benignPrompts: policy.probes.benign.map((p) => p.prompt), redTeamPrompts: policy.probes.red_team.map((p) => p.prompt) });
    decision = decide(ev, { gate: policy.gate, kl: policy.kl, seed });
  } catch (err) {
    // An evaluation that cannot finish never promotes: the candidate is rejected with the cause.
    decision = { decision: 'reject', reasons: [`evaluation failed: ${errorMessage(err)}`], checks: [] };
    log.error('gate evaluation failed; candidate rejected', { version: candidate, err: errorMessage(err) });
  }
  const v = recordDecision(reg, candidate, decision, { seed });
  log.info('gate decided', { version: candidate, decision: decision.decision, reasons: decision.reasons });
  const promoted = await promoteIfAllowed(reg, v, policy.deployment, { ...promotion, rollout: policy.rollout });
  return { version: v, decision, promotion: promoted };
}
