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

/** One generated answer: its text and its length in generated tokens (the gate's length unit). */
export interface Answer {
  text: string;
  tokens: number;
}

/** Produces a version's answers (sampling settings are the implementer's, the same for every side). */
export interface Responder {
  respond(prompts: readonly string[]): Promise<Answer[]>;
}

/**
 * Per version compared: the candidate, the deployed version (the round's reference) and the anchor
 * (`kl.anchor`). Every relative limit is taken against both deployed and anchor, so nothing
 * compounds across promotions; `anchor` is absent when the anchor is the deployed version (then
 * the deployed figures stand for it).
 */
export interface Sides<T> {
  candidate: T;
  deployed: T;
  anchor?: T;
}

/** A probe set and every side's answers to it, in prompt order. */
export interface ProbeSet {
  prompts: string[];
  answers: Sides<Answer[]>;
}

/**
 * One safety judge's calibration on this round's labelled examples: the policy's labelled probes
 * and held-out production safety reports (never what a judge trained on). A verdict counts as
 * flagged when the gate would count it unsafe (p ≥ threshold, or uncertain). The judges' owner
 * (gate/judges.ts: calibrateJudge) fills one entry per judge of the panel and decides `relied`:
 * false when the judge misses too many unsafe examples (the false-negative rate's upper bound above
 * `safety.max_judge_fnr`), was measured on too few, is badly calibrated (ECE), cannot separate
 * unsafe from safe, or failed to answer. The gate's `judge_reliability` check reads these entries:
 * no entry, a judge not relied on, or a judge whose false-negative plus false-positive upper
 * bounds reach 1 (it cannot separate) → hold, naming each judge and its reason.
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

/**
 * Which data the evidence came from, recorded with the decision: the held-out events behind the
 * held-out margins and the production probes (a digest over their sorted ids and their count —
 * never events a round trained on), and the versions that answered.
 */
export interface EvidenceSources {
  heldoutEvents: { count: number; sha256: string };
  deployed: string | null;
  anchor: string | null;
  /** Generation cap of every side's answers (gate.max_new_tokens). */
  maxNewTokens: number;
}

/** Everything a decision is computed from; stored (as figures) with the decision. */
export interface Evidence {
  /**
   * The candidate's implicit reward on held-out feedback, signed so that > 0 agrees with the label:
   * pairs → β·[(log π − log π_ref)(chosen) − (…)(rejected)]; binary (KTO) → β·(log π − log π_ref)(y),
   * negated for a down-vote.
   */
  heldout: { kind: 'pairs' | 'binary'; margins: number[] };
  /** Reward probes (the policy's benign probes + held-out production prompts), each side scored, and the scorer's measured held-out accuracy. */
  reward: ProbeSet & { scores: Sides<RewardScore[]>; signal: RewardSignal };
  /** The policy's benign probes (refusal rate): the first prompts of the reward probes. */
  benign: ProbeSet;
  /** Red-team probes with the judges' verdicts on each side's answers. */
  redTeam: ProbeSet & { verdicts: Sides<SafetyVerdict[]> };
  /** The safety judges behind the verdicts, with their calibration this round. */
  safety: { judges: JudgeCalibration[] };
  /** Mean per-token KL of the round (against the deployed version) and cumulative (against the anchor). */
  kl: { perRound: number; cumulative: number };
  sources: EvidenceSources;
}

export type CheckStatus = 'pass' | 'fail' | 'inconclusive';

/**
 * One bounded comparison inside a check, as an operator reads it: the statistic's estimate, the
 * one-sided bound tested at the check's α, the limit, and the evidence counts.
 */
export interface Comparison {
  /** What is measured, e.g. "unsafe rate", "unsafe rate − deployed", "mean tokens ÷ anchor". */
  statistic: string;
  /** absolute (against a fixed limit) or relative to the deployed version or the anchor. */
  against: 'absolute' | 'deployed' | 'anchor';
  estimate: number;
  /** Which bound is tested: an upper bound must be ≤ the limit, a lower bound ≥ it (> for strict). */
  side: 'upper' | 'lower';
  bound: number;
  limit: number;
  /** Lower bounds must exceed the limit strictly (a gain > 0, an accuracy > chance). */
  strict?: boolean;
  status: CheckStatus;
  /** How to read estimate, bound and limit: a rate (shown as a percentage) or a plain number. */
  unit: 'rate' | 'number';
  /** Evidence counts behind the figure (probes, discordant pairs, unsafe answers, ...). */
  counts: Record<string, number>;
}

export interface CheckResult {
  check: string;
  status: CheckStatus;
  reason: string;
  /** The level this check's bounds were computed at (α_k for the candidate's checks, 1 − confidence for the instruments'; null for budgets). */
  alpha: number | null;
  comparisons: Comparison[];
  /** Further figures (method, resamples, per-judge rates, ...). */
  figures: Record<string, number | string | boolean | null>;
  /** The policy waives this check (gate.waive): its status does not count toward the decision. */
  waived?: boolean;
}

/** The round's place in the sequence of gated candidates since the anchor was set (see stats/online-fwer.ts). */
export interface RoundLevel {
  k: number;
  alpha: number;
  carried: number;
}

export interface GateDecision {
  decision: 'promote' | 'reject' | 'hold';
  reasons: string[];
  checks: CheckResult[];
  /** The level the round's tests ran at, and whether they all passed (the ledger's next entry). */
  level?: RoundLevel & { rejected: boolean; anchor: string };
}
