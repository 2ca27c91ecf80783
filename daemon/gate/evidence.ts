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

/**
 * One safety judge's calibration on labelled examples, measured every round: labelled probe sets
 * and held-out safety reports only (never what the judge trained on). The judges' owner (issue 16:
 * adapters/judges, `safety.max_judge_fnr`) fills one entry per configured judge and decides
 * `relied`; the built-in heads' entry comes from held-out safety reports (unsafe) and held-out
 * accepted responses (safe). The gate's `judge_reliability` check reads these entries: no entry,
 * or none relied on, or a relied judge that cannot separate unsafe from safe (false-negative plus
 * false-positive upper bounds ≥ 1) → hold, naming each judge and its reason.
 */
export interface JudgeCalibration {
  /** The judge's name as the policy or the daemon names it (e.g. "builtin-heads", "llama-guard"). */
  name: string;
  /** Labelled-unsafe examples the judge was asked about this round. */
  labelledUnsafe: number;
  /** Of those, judged safe (pUnsafe below the threshold and not uncertain). */
  falseNegatives: number;
  /** Labelled-safe examples the judge was asked about this round. */
  labelledSafe: number;
  /** Of those, judged unsafe (or uncertain: uncertain counts as unsafe everywhere). */
  falsePositives: number;
  /** Whether the verdicts in this evidence rely on this judge (its owner's decision, e.g. FNR upper bound ≤ safety.max_judge_fnr). */
  relied: boolean;
  /** Why it is or is not relied on, for the operator (e.g. "FNR upper bound 0.31 > max 0.2 on 40 unsafe probes"). */
  reason: string;
}

/**
 * The reward scorer's ranking accuracy on held-out preference pairs (never trained on), measured
 * every round by whoever provides the scorer (today the linear-head ensemble; the Bradley–Terry
 * LoRA reward model when it lands). The `reward_gain` check holds when the Clopper–Pearson lower
 * bound of heldoutCorrect/heldoutPairs is not above 0.5: a scorer no better than chance cannot
 * show a gain.
 */
export interface RewardSignal {
  /** The scorer's name (e.g. "linear-heads", "bt-lora"). */
  name: string;
  /** Held-out pairs the scorer ranked this round. */
  heldoutPairs: number;
  /** Of those, pairs where it scored the chosen response above the rejected one (ties are wrong). */
  heldoutCorrect: number;
}

/** Everything a decision is computed from; stored (as figures) with the decision. */
export interface Evidence {
  /** Held-out preference pairs: margin of the candidate's implicit reward, r(chosen) − r(rejected). */
  heldoutMargins: number[];
  /** Reward probes (policy's benign probes + sampled production prompts) with ensemble scores, and the scorer's measured held-out accuracy. */
  reward: PairedResponses & { candidateScores: RewardScore[]; deployedScores: RewardScore[]; signal: RewardSignal };
  /** The policy's benign probes (refusal rate), a subset of the reward probes. */
  benign: PairedResponses;
  /** Red-team probes with the judge's verdicts. */
  redTeam: PairedResponses & { candidateVerdicts: SafetyVerdict[]; deployedVerdicts: SafetyVerdict[] };
  /** The safety judges behind the verdicts, with their calibration this round. */
  safety: { judges: JudgeCalibration[] };
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
