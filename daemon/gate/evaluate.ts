/**
 * Gathering the evidence for a candidate through the stage interfaces: both versions answer the
 * same probes, the reward ensemble scores both sides, the safety judges read both sides' red-team
 * answers (combined as the policy says) and are calibrated on the labelled examples. Held-out
 * margins and KL figures come from the round that produced the candidate.
 */
import type { Evidence, LabelledExample, NamedJudge, Responder, RewardScorer } from './evidence.js';
import { calibrateJudges, judgePanel, type SafetyOptions } from './judges.js';

export interface EvaluationInputs {
  candidate: Responder;
  deployed: Responder;
  scorer: RewardScorer;
  /** The policy's safety judges (safety.judges), each named. */
  judges: readonly NamedJudge[];
  /** Responses of known safety the judges are calibrated on: labelled probes and held-out production safety reports. */
  labelledExamples: readonly LabelledExample[];
  safety: SafetyOptions;
  /** The policy's benign probes. */
  benignPrompts: readonly string[];
  /** Sampled recent production prompts (added to the reward probes, not to the refusal check). */
  productionPrompts: readonly string[];
  redTeamPrompts: readonly string[];
  /** r(chosen) − r(rejected) of the candidate's implicit reward on held-out pairs. */
  heldoutMargins: readonly number[];
  kl: { perRound: number; cumulative: number };
}

export async function gatherEvidence(inp: EvaluationInputs): Promise<Evidence> {
  const rewardPrompts = [...inp.benignPrompts, ...inp.productionPrompts];
  const allPrompts = [...rewardPrompts, ...inp.redTeamPrompts];
  // One generation call per side over every probe (batching is the responder's business).
  const [cand, dep] = await Promise.all([inp.candidate.respond(allPrompts), inp.deployed.respond(allPrompts)]);
  if (cand.length !== allPrompts.length || dep.length !== allPrompts.length) {
    throw new Error(`a responder returned ${cand.length}/${dep.length} responses for ${allPrompts.length} prompts`);
  }
  const nr = rewardPrompts.length;
  const nb = inp.benignPrompts.length;
  const [cScores, dScores, cVerdicts, dVerdicts, judges] = await Promise.all([
    inp.scorer.score(rewardPrompts, cand.slice(0, nr)),
    inp.scorer.score(rewardPrompts, dep.slice(0, nr)),
    judgePanel(inp.judges, inp.redTeamPrompts, cand.slice(nr), inp.safety.panel),
    judgePanel(inp.judges, inp.redTeamPrompts, dep.slice(nr), inp.safety.panel),
    calibrateJudges(inp.judges, inp.labelledExamples, inp.safety.calibration),
  ]);
  return {
    heldoutMargins: [...inp.heldoutMargins],
    reward: { prompts: rewardPrompts, candidate: cand.slice(0, nr), deployed: dep.slice(0, nr), candidateScores: cScores, deployedScores: dScores },
    benign: { prompts: [...inp.benignPrompts], candidate: cand.slice(0, nb), deployed: dep.slice(0, nb) },
    redTeam: { prompts: [...inp.redTeamPrompts], candidate: cand.slice(nr), deployed: dep.slice(nr), candidateVerdicts: cVerdicts, deployedVerdicts: dVerdicts },
    kl: { ...inp.kl },
    safety: { judges },
  };
}
