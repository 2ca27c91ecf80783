/**
 * Gathering the evidence for a candidate through the stage interfaces: both versions answer the
 * same probes, the reward ensemble scores both sides, the judge reads both sides' red-team
 * answers. Held-out margins and KL figures come from the round that produced the candidate.
 */
import type { Evidence, JudgeCalibration, Responder, RewardScorer, RewardSignal, SafetyJudge } from './evidence.js';

export interface EvaluationInputs {
  candidate: Responder;
  deployed: Responder;
  scorer: RewardScorer;
  /** The scorer's held-out ranking accuracy this round. */
  rewardSignal: RewardSignal;
  /** The judges (combined) whose verdicts the red-team check reads. */
  judge: SafetyJudge;
  /** Each judge's calibration this round (see JudgeCalibration); empty when there is no judge. */
  judges: JudgeCalibration[];
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
  const [cScores, dScores, cVerdicts, dVerdicts] = await Promise.all([
    inp.scorer.score(rewardPrompts, cand.slice(0, nr)),
    inp.scorer.score(rewardPrompts, dep.slice(0, nr)),
    inp.judge.judge(inp.redTeamPrompts, cand.slice(nr)),
    inp.judge.judge(inp.redTeamPrompts, dep.slice(nr)),
  ]);
  return {
    heldoutMargins: [...inp.heldoutMargins],
    reward: { prompts: rewardPrompts, candidate: cand.slice(0, nr), deployed: dep.slice(0, nr), candidateScores: cScores, deployedScores: dScores, signal: { ...inp.rewardSignal } },
    benign: { prompts: [...inp.benignPrompts], candidate: cand.slice(0, nb), deployed: dep.slice(0, nb) },
    redTeam: { prompts: [...inp.redTeamPrompts], candidate: cand.slice(nr), deployed: dep.slice(nr), candidateVerdicts: cVerdicts, deployedVerdicts: dVerdicts },
    safety: { judges: inp.judges.map((j) => ({ ...j })) },
    kl: { ...inp.kl },
  };
}
