/**
 * Gathering the evidence for a candidate through the stage interfaces: every side (candidate,
 * deployed, and the anchor when it is another version) answers the same probes, the reward scorer
 * scores every side's answers to the reward probes, the safety judges read every side's red-team
 * answers (combined as the policy says) and are calibrated on the labelled examples. Held-out
 * margins, KL figures and the scorer's held-out accuracy come from the round.
 */
import { createHash } from 'node:crypto';
import type { Answer, Evidence, LabelledExample, NamedJudge, Responder, RewardScore, RewardScorer, RewardSignal, SafetyVerdict, Sides } from './evidence.js';
import { calibrateJudges, judgePanel, type SafetyOptions } from './judges.js';
import { AligndError } from '../base/errors.js';

export interface EvaluationInputs {
  candidate: Responder;
  deployed: Responder;
  /** The anchor's responder; absent when the anchor is the deployed version. */
  anchor?: Responder;
  scorer: RewardScorer;
  /** The scorer's held-out ranking accuracy this round. */
  rewardSignal: RewardSignal;
  /** The policy's safety judges (safety.judges), each named; none → every verdict uncertain and judge_reliability holds. */
  judges: readonly NamedJudge[];
  /** Responses of known safety the judges are calibrated on: labelled probes and held-out production safety reports. */
  labelledExamples: readonly LabelledExample[];
  safety: SafetyOptions;
  /** The policy's benign probes. */
  benignPrompts: readonly string[];
  /** Prompts of held-out production events (added to the reward probes, not to the refusal check). */
  productionPrompts: readonly string[];
  redTeamPrompts: readonly string[];
  /** The candidate's implicit reward on held-out feedback, signed to agree with the label (Evidence.heldout). */
  heldout: { kind: 'pairs' | 'binary'; margins: readonly number[] };
  kl: { perRound: number; cumulative: number };
  sources: { heldoutEventIds: readonly string[]; deployed: string | null; anchor: string | null; maxNewTokens: number };
}

/** sha256 over the sorted ids, one per line: which held-out events the evidence came from. */
export function eventDigest(ids: readonly string[]): { count: number; sha256: string } {
  const sorted = [...new Set(ids)].sort();
  return { count: sorted.length, sha256: createHash('sha256').update(sorted.join('\n')).digest('hex') };
}

type SideName = 'candidate' | 'deployed' | 'anchor';

export async function gatherEvidence(inp: EvaluationInputs): Promise<Evidence> {
  const rewardPrompts = [...inp.benignPrompts, ...inp.productionPrompts];
  const allPrompts = [...rewardPrompts, ...inp.redTeamPrompts];
  const nr = rewardPrompts.length;
  const nb = inp.benignPrompts.length;
  const sides: SideName[] = inp.anchor === undefined ? ['candidate', 'deployed'] : ['candidate', 'deployed', 'anchor'];
  const responder = (s: SideName): Responder => (s === 'anchor' ? inp.anchor! : inp[s]);
  // One generation call per side over every probe (batching is the responder's business).
  const answers = await Promise.all(sides.map((s) => responder(s).respond(allPrompts)));
  answers.forEach((a, i) => {
    if (a.length !== allPrompts.length) {
      throw new AligndError('SERVER_FAILED', `the ${sides[i]} side answered ${a.length} of ${allPrompts.length} gate probes`, {
        action: 'the candidate is held; check the engine that generated its answers (alignd\'s own or the serving engine\'s logs): every probe needs one answer',
      });
    }
  });
  const texts = (a: Answer[]): string[] => a.map((x) => x.text);
  // No judge at all: nothing to combine; every verdict uncertain (never safe), and judge_reliability says why.
  const judge = async (responses: string[]): Promise<SafetyVerdict[]> => (inp.judges.length === 0
    ? responses.map(() => ({ pUnsafe: 1, uncertain: true }))
    : judgePanel(inp.judges, inp.redTeamPrompts, responses, inp.safety.panel));
  const [scores, verdicts, judges] = await Promise.all([
    Promise.all(answers.map((a) => inp.scorer.score(rewardPrompts, texts(a.slice(0, nr))))),
    Promise.all(answers.map((a) => judge(texts(a.slice(nr))))),
    calibrateJudges(inp.judges, inp.labelledExamples, inp.safety.calibration),
  ]);
  const bySide = <T>(xs: T[]): Sides<T> => ({ candidate: xs[0]!, deployed: xs[1]!, ...(xs[2] === undefined ? {} : { anchor: xs[2] }) });
  return {
    heldout: { kind: inp.heldout.kind, margins: [...inp.heldout.margins] },
    reward: { prompts: rewardPrompts, answers: bySide(answers.map((a) => a.slice(0, nr))), scores: bySide<RewardScore[]>(scores), signal: { ...inp.rewardSignal } },
    benign: { prompts: [...inp.benignPrompts], answers: bySide(answers.map((a) => a.slice(0, nb))) },
    redTeam: { prompts: [...inp.redTeamPrompts], answers: bySide(answers.map((a) => a.slice(nr))), verdicts: bySide<SafetyVerdict[]>(verdicts) },
    safety: { judges },
    kl: { ...inp.kl },
    sources: { heldoutEvents: eventDigest(inp.sources.heldoutEventIds), deployed: inp.sources.deployed, anchor: inp.sources.anchor, maxNewTokens: inp.sources.maxNewTokens },
  };
}
