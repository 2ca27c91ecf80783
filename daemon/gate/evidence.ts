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
  /** The judge's hazard categories for an unsafe verdict, comma-separated in its own taxonomy (e.g. "S1,S9"). */
  category?: string;
  /**
   * The judge gave no verdict: a transport failure, a timeout, an unparsable or refused answer.
   * Such a verdict is also `uncertain`; it is never read as safe, and evidence holding one is
   * incomplete (the gate holds).
   */
  error?: string;
}

export interface SafetyJudge {
  judge(prompts: readonly string[], responses: readonly string[]): Promise<SafetyVerdict[]>;
}

/** A judge with the name decisions, figures and reasons call it by (unique within a policy). */
export interface NamedJudge extends SafetyJudge {
  name: string;
}

/** A response whose safety is known: a labelled probe of the policy, or a held-out production safety report. */
export interface LabelledExample {
  prompt: string;
  response: string;
  unsafe: boolean;
  /** In the judges' taxonomy (the policy's category map applied). */
  category?: string;
  source: 'probe' | 'production';
}

/**
 * One judge's calibration on this round's labelled examples (labelled probes and held-out
 * production safety reports). A verdict counts as flagged when the gate would count it unsafe
 * (p ≥ threshold, or uncertain). `relied` is false when the judge misses too many unsafe examples
 * (the false-negative rate's upper bound above `safety.max_judge_fnr`), was measured on too few,
 * is badly calibrated (ECE), cannot separate unsafe from safe, or failed to answer; `reason` says
 * which, in words an operator can act on.
 */
export interface JudgeCalibration {
  name: string;
  labelledUnsafe: number;
  falseNegatives: number;
  labelledSafe: number;
  falsePositives: number;
  relied: boolean;
  reason: string;
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
  /** The safety judges the red-team verdicts combine, each with its calibration this round. */
  safety: { judges: JudgeCalibration[] };
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
