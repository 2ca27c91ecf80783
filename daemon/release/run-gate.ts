/**
 * One gate run for a candidate already in the registry: gather the evidence through the stage
 * interfaces, decide, write the decision (figures and reasons) to the manifest and the audit log,
 * and push it when the policy's deployment mode allows. The loop calls this after a training round
 * has added the candidate.
 */
import { AligndError, errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { silentLogger } from '../base/log.js';
import type { Policy } from '../policy/schema.js';
import type { PromoteOptions, PromoteResult } from '../registry/promote.js';
import type { Registry, VersionInfo } from '../registry/registry.js';
import { decide } from '../gate/decide.js';
import { promoteIfAllowed } from './deploy.js';
import { gatherEvidence, type EvaluationInputs } from '../gate/evaluate.js';
import { recordDecision } from './decisions.js';
import type { GateDecision, LabelledExample } from '../gate/evidence.js';
import { mapCategory, safetyOptions } from '../gate/judges.js';

export interface GateRun {
  version: VersionInfo;
  decision: GateDecision;
  promotion: PromoteResult | undefined;
}

/** The policy's labelled probes as labelled examples, categories in the judges' taxonomy. */
export function labelledProbes(policy: Policy): LabelledExample[] {
  return policy.probes.labelled.map((p) => {
    const category = mapCategory(policy.safety.categories.map, p.category);
    return { prompt: p.prompt, response: p.response, unsafe: p.label === 'unsafe', ...(category === undefined ? {} : { category }), source: 'probe' as const };
  });
}

export type GateInputs = Omit<EvaluationInputs, 'benignPrompts' | 'redTeamPrompts' | 'labelledExamples' | 'safety'> & {
  /** Held-out production safety reports as labelled unsafe examples (categories already mapped). */
  productionLabelled?: readonly LabelledExample[];
};

export async function runGate(reg: Registry, candidate: string, policy: Policy, inputs: GateInputs,
  promotion: Omit<PromoteOptions, 'reason'> & { log?: Logger }, seed = 1): Promise<GateRun> {
  const log = promotion.log ?? silentLogger;
  let decision: GateDecision;
  try {
    const { productionLabelled, ...rest } = inputs;
    const ev = await gatherEvidence({
      ...rest, benignPrompts: policy.probes.benign.map((p) => p.prompt), redTeamPrompts: policy.probes.red_team.map((p) => p.prompt),
      labelledExamples: [...labelledProbes(policy), ...(productionLabelled ?? [])], safety: safetyOptions(policy, seed),
    });
    decision = decide(ev, { gate: policy.gate, kl: policy.kl, safety: policy.safety, seed });
  } catch (err) {
    if (err instanceof AligndError && err.code === 'JUDGE_UNAVAILABLE') {
      // A judge outage is no evidence against the candidate, and none for it: a person decides, or a later round.
      decision = { decision: 'hold', reasons: [`safety_judges: ${errorMessage(err)}`], checks: [] };
      log.error('a safety judge gave no verdict; candidate held', { version: candidate, err: errorMessage(err) });
    } else {
      // An evaluation that cannot finish never promotes: the candidate is rejected with the cause.
      decision = { decision: 'reject', reasons: [`evaluation failed: ${errorMessage(err)}`], checks: [] };
      log.error('gate evaluation failed; candidate rejected', { version: candidate, err: errorMessage(err) });
    }
  }
  const v = await recordDecision(reg, candidate, decision, { seed });
  log.info('gate decided', { version: candidate, decision: decision.decision, reasons: decision.reasons });
  const promoted = await promoteIfAllowed(reg, v, policy.deployment, { ...promotion, rollout: policy.rollout });
  return { version: v, decision, promotion: promoted };
}
