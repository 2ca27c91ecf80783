/**
 * Probation records in the registry: starting one with an automatic promotion, the version on
 * probation that holds back newer candidates, recording a decision, a person's answer to a hold,
 * and what a pinned deployment means for the version it displaces. The comparison itself runs in
 * daemon/canary; this is what release needs to promote, defer and roll back consistently.
 *
 * Rollback is a pin in the policy file, whoever writes it: alignd's probation or a person
 * (`alignd rollback`, an editor). Either way the hot reload calls enforceDeployment, which calls
 * `endProbationByPin` here: the version on probation it displaces is marked `rolled_back` and is
 * never promoted again automatically (nextToPromote skips it and the candidates gated against it).
 */
import { AligndError } from '../base/errors.js';
import { servedName } from '../base/names.js';
import type { RolloutPolicy } from '../policy/schema.js';
import type { ProbationRecord } from '../registry/manifest.js';
import type { Registry, VersionInfo } from '../registry/registry.js';
import type { CanaryWeight } from '../registry/state.js';

/** A probation decision as its writer gives it (the time is added when it is recorded). */
export interface ProbationDecisionInput {
  outcome: 'stable' | 'rollback' | 'hold';
  reason: string;
  /** `alignd`, a person's name, or `policy pin`. */
  by: string;
  trigger?: string;
  tenant?: string;
  figures?: unknown;
  timeline?: unknown;
}

/** The version whose probation is open (watched or held for a person), if any. */
export function openProbation(reg: Registry): VersionInfo | undefined {
  return reg.list().reverse().find((v) => v.manifest.probation?.status === 'watching' || v.manifest.probation?.status === 'held');
}

export const isRolledBack = (v: VersionInfo): boolean => v.manifest.probation?.status === 'rolled_back';

/**
 * Start probation for `v`, which is about to be promoted automatically, when the policy asks for
 * it and there is a version to compare with and roll back to. Returns the traffic share to
 * announce with the promotion (null: all traffic), or undefined when no probation starts.
 */
export async function beginProbation(reg: Registry, v: VersionInfo, rollout: RolloutPolicy | undefined): Promise<CanaryWeight | null | undefined> {
  if (rollout?.enabled !== true) return undefined;
  const s = reg.deployment();
  const previous = s === undefined ? null : s.complete ? s.desired : s.last_complete;
  if (previous === null || previous === v.version) {
    await reg.audit('probation.skipped', { version: v.version, reason: 'no earlier registry version serves to compare with and roll back to' });
    return undefined;
  }
  const record: ProbationRecord = { status: 'watching', previous, started_at: new Date().toISOString(), canary_weight: rollout.canary_weight };
  await reg.recordProbation(v.version, record);
  await reg.audit('probation.start', { version: v.version, previous, canary_weight: rollout.canary_weight, min_events: rollout.min_events, max_hours: rollout.max_hours });
  return rollout.canary_weight === null ? null : { weight: rollout.canary_weight, baseline: previous, baseline_name: servedName(reg.model, previous) };
}

/** Its probation record, as read under the registry's lock; a version never on probation is refused. */
function onProbation(reg: Registry, v: VersionInfo): ProbationRecord {
  const rec = v.manifest.probation;
  if (rec === null || rec === undefined) throw new AligndError('CONFIG_INVALID', `${reg.model} ${v.version} is not on probation`, { action: 'list versions with alignd registry list' });
  return rec;
}

/** Write the decision that ends (or holds) a probation; the status follows from the outcome. */
export async function recordProbationDecision(reg: Registry, version: string, decision: ProbationDecisionInput): Promise<VersionInfo> {
  const status: ProbationRecord['status'] = decision.outcome === 'stable' ? 'stable' : decision.outcome === 'hold' ? 'held' : 'rolled_back';
  let rec!: ProbationRecord;
  const out = await reg.updateProbation(version, (v) => {
    rec = onProbation(reg, v);
    return { ...rec, status, decision: { ...decision, at: new Date().toISOString() } };
  });
  await reg.audit(`probation.${decision.outcome}`, { version, previous: rec.previous, by: decision.by, reason: decision.reason, trigger: decision.trigger ?? null, tenant: decision.tenant ?? null });
  return out;
}

/**
 * alignd's comparison decided a rollback: write the decision (the probation stays open) and audit
 * it with its figures, before the pin is written to the policy file. The pin then closes it
 * through `endProbationByPin`, on the same path as a person's pin.
 */
export async function markRollbackDecided(reg: Registry, version: string, decision: Omit<ProbationDecisionInput, 'outcome'>): Promise<VersionInfo> {
  let rec!: ProbationRecord;
  const out = await reg.updateProbation(version, (v) => {
    rec = onProbation(reg, v);
    return { ...rec, decision: { ...decision, outcome: 'rollback', at: new Date().toISOString() } };
  });
  await reg.audit('probation.rollback_decided', { version, previous: rec.previous, reason: decision.reason, trigger: decision.trigger ?? null, tenant: decision.tenant ?? null, figures: decision.figures ?? null });
  return out;
}

/**
 * A pinned deployment is in force: the open probation it displaces ends as rolled back (the reason
 * is the probation's own when alignd decided it, else the pin's); a pin of the version on probation
 * itself keeps it, as stable. Returns the text the promotion of the pin carries.
 */
export async function endProbationByPin(reg: Registry, pinned: string): Promise<string> {
  const base = `pinned by policy (${pinned})`;
  const open = openProbation(reg);
  if (open === undefined) return base;
  const rec = open.manifest.probation!;
  if (open.version === pinned) {
    await recordProbationDecision(reg, open.version, { outcome: 'stable', by: 'policy pin', reason: `the policy pins ${pinned}, the version on probation` });
    return base;
  }
  // alignd's comparison writes its rollback decision before it edits the policy (status still open).
  const ours = rec.decision?.outcome === 'rollback' ? rec.decision : undefined;
  const reason = ours?.reason ?? `the policy pins ${pinned} while ${open.version} was on probation`;
  await recordProbationDecision(reg, open.version, { ...(ours ?? {}), outcome: 'rollback', by: ours?.by ?? 'policy pin', reason });
  return `${base}: rollback of ${open.version} — ${reason}`;
}

/**
 * A person's answer to a probation held at max_hours: approve keeps the version (stable). A denial
 * is a rollback, which is a pin in the policy file; this says so rather than guessing the file.
 */
export async function answerProbationHold(reg: Registry, v: VersionInfo, approved: boolean, by: string, note: string | undefined): Promise<VersionInfo> {
  const rec = v.manifest.probation;
  if (rec?.status !== 'held') throw new AligndError('CONFIG_INVALID', `${reg.model} ${v.version} is not held on probation`);
  if (!approved) {
    throw new AligndError('CONFIG_INVALID', `${reg.model} ${v.version} is held on probation; denying it means rolling back`, {
      action: `roll back with: alignd rollback ${reg.model} ${rec.previous}` });
  }
  return recordProbationDecision(reg, v.version, { outcome: 'stable', by, reason: `approved by ${by} after probation held: ${rec.decision?.reason ?? ''}${note === undefined ? '' : ` (note: ${note})`}` });
}
