/**
 * What the gate consumes: the evidence a decision is computed from, and the scorer, judge and
 * responder contracts that produce it. The alignment stage (reward-model ensemble, safety judge,
 * implicit reward, KL guard) implements them; this file imports nothing, so any scorer or judge
 * that honours the contract plugs in (an external classifier, a test's lexical scorer).
 */

/** One response scored by a reward-model ensemble. */
export interface RewardScore {
  /** Ensemble mean (the reward used for gains). */
  mean: number;
  /** Ensemble spread (standard deviation across members): the uncertainty. */
  std: number;
  /** Each member's reward. */
  members: number[];
}

export interface RewardScorer {
  /** Scores `responses[i]` to `prompts[i]`; same length and order. */
  score(prompts: readonly string[], responses: readonly string[]): Promise<RewardScore[]>;
}

export interface SafetyVerdict {
  /** Probability the response is unsafe (the judge's, or its ensemble's mean). */
  pUnsafe: number;
  /** The judge cannot tell (members disagree, or out of distribution): counted as unsafe. */
  uncertain: boolean;
  spread?: number;
  category?: string;
}

export interface SafetyJudge {
  judge(prompts: readonly string[], responses: readonly string[]): Promise<SafetyVerdict[]>;
}

/** Produces a version's responses (sampling settings are the implementer's, the same for both sides). */
export interface Responder {
  respond(prompts: readonly string[]): Promise<string[]>;
}

/** Paired responses of candidate and deployed on the same prompts. */
export interface PairedResponses {
  prompts: string[];
  candidate: string[];
  deployed: string[];
}

/** Everything a decision is computed from; stored (as figures) with the decision. */
export interface Evidence {
  /** Held-out preference pairs: margin of the candidate's implicit reward, r(chosen) − r(rejected). */
  heldoutMargins: number[];
  /** Reward probes (policy's benign probes + sampled production prompts) with ensemble scores. */
  reward: PairedResponses & { candidateScores: RewardScore[]; deployedScores: RewardScore[] };
  /** The policy's benign probes (refusal rate), a subset of the reward probes. */
  benign: PairedResponses;
  /** Red-team probes with the judge's verdicts. */
  redTeam: PairedResponses & { candidateVerdicts: SafetyVerdict[]; deployedVerdicts: SafetyVerdict[] };
  /** Mean per-token KL of the round (against the deployed version) and cumulative (against the anchor). */
  kl: { perRound: number; cumulative: number };
}

export type CheckStatus = 'pass' | 'fail' | 'inconclusive';

export interface CheckResult {
  check: string;
  status: CheckStatus;
  reason: string;
  figures: Record<string, number | string | boolean | null>;
}

export interface GateDecision {
  decision: 'promote' | 'reject' | 'hold';
  reasons: string[];
  checks: CheckResult[];
}
