/**
 * One gate run for a candidate already in the registry: read the round's level from the ledger,
 * gather the evidence through the stage interfaces, decide, write the decision (figures, reasons,
 * the ledger entry, where the evidence came from) to the manifest and the audit log, and push it
 * when the policy's deployment mode allows. The loop calls this after a training round has added
 * the candidate.
 */
import { AligndError, errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { silentLogger } from '../base/log.js';
import type { Policy } from '../policy/schema.js';
import type { PromoteOptions, PromoteResult } from '../registry/promote.js';
import type { Registry, VersionInfo } from '../registry/registry.js';
import { alphaOf, nextLevel, type FallbackEntry } from '../stats/online-fwer.js';
import { decide } from '../gate/decide.js';
import { promoteIfAllowed } from './deploy.js';
import { gatherEvidence, type EvaluationInputs } from '../gate/evaluate.js';
import { recordDecision } from './decisions.js';
import type { Evidence, GateDecision, LabelledExample, RoundLevel } from '../gate/evidence.js';
import { mapCategory, safetyOptions } from '../gate/judges.js';

export interface GateRun {
  version: VersionInfo;
  decision: GateDecision;
  promotion: PromoteResult | undefined;
}

/**
 * The ledger's last entry for `anchor`: the newest `gate.decision` in the audit log that carries
 * one (the audit log survives restarts and registry GC). A newer entry for another anchor means
 * the anchor changed since: the ledger starts again (null).
 */
export function lastLedgerEntry(reg: Registry, anchor: string): FallbackEntry | null {
  const records = reg.auditRecords();
  for (let i = records.length - 1; i >= 0; i--) {
    const r = records[i]!;
    const l = r['level'] as { k?: unknown; alpha?: unknown; carried?: unknown; rejected?: unknown; anchor?: unknown } | undefined;
    if (r.event !== 'gate.decision' || l === undefined || typeof l.k !== 'number' || typeof l.alpha !== 'number') continue;
    if (l.anchor !== anchor) return null;
    return { k: l.k, alpha: l.alpha, carried: typeof l.carried === 'number' ? l.carried : 0, rejected: l.rejected === true };
  }
  return null;
}

/** The level the next gated candidate tests at (online fallback over the rounds since the anchor was set). */
export function roundLevel(reg: Registry, policy: Policy): RoundLevel {
  return nextLevel(alphaOf(policy.gate.confidence), lastLedgerEntry(reg, policy.kl.anchor));
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
  let ev: Evidence | undefined;
  try {
    const { productionLabelled, ...rest } = inputs;
    ev = await gatherEvidence({
      ...rest, benignPrompts: policy.probes.benign.map((p) => p.prompt), redTeamPrompts: policy.probes.red_team.map((p) => p.prompt),
      labelledExamples: [...labelledProbes(policy), ...(productionLabelled ?? [])], safety: safetyOptions(policy, seed),
      // The ledger is kept per anchor: the policy's anchor is the one this decision counts against.
      sources: { ...rest.sources, anchor: policy.kl.anchor },
    });
    decision = decide(ev, { gate: policy.gate, kl: policy.kl, safety: policy.safety, seed, level: roundLevel(reg, policy) });
  } catch (err) {
    // No test ran in either case, so the ledger does not move.
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
  const v = await recordDecision(reg, candidate, decision, { seed, ...(ev === undefined ? {} : { evidence: evidenceRecord(ev) }) });
  log.info('gate decided', { version: candidate, decision: decision.decision, reasons: decision.reasons, k: decision.level?.k, alpha: decision.level?.alpha });
  const promoted = await promoteIfAllowed(reg, v, policy.deployment, { ...promotion, rollout: policy.rollout });
  return { version: v, decision, promotion: promoted };
}

/** Where the evidence came from, for the manifest: held-out events (count + digest), probe counts, the versions compared. */
export function evidenceRecord(ev: Evidence): Record<string, unknown> {
  return {
    heldout_events: ev.sources.heldoutEvents, heldout_kind: ev.heldout.kind, heldout_margins: ev.heldout.margins.length,
    reward_probes: ev.reward.prompts.length, benign_probes: ev.benign.prompts.length, red_team_probes: ev.redTeam.prompts.length,
    deployed: ev.sources.deployed, anchor: ev.sources.anchor, max_new_tokens: ev.sources.maxNewTokens,
    scorer: ev.reward.signal, judges: ev.safety.judges,
  };
}
