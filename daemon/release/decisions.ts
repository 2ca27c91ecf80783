/**
 * Writing decisions where they belong: the candidate's manifest (figures and reasons) and the
 * model's audit log; and a person's approve/deny of a held candidate (the admin API and the CLI
 * call these). Approving does not push by itself: it turns the decision into `promote`, and the
 * daemon performs the promotion (the admin route's onApproved hook, or its loop). The same verbs
 * answer a promoted version that probation held for a person (./probation.ts).
 */
import { AligndError } from '../base/errors.js';
import type { GateRecord } from '../registry/manifest.js';
import type { Registry, VersionInfo } from '../registry/registry.js';
import type { GateDecision } from '../gate/evidence.js';
import { answerProbationHold } from './probation.js';

/**
 * The decision in the manifest (figures per check: status, reason, α, every comparison's
 * estimate/bound/limit/counts) and in the audit log, with the round's ledger entry (k, α_k,
 * carried, whether every check passed, the anchor): the audit log is where the next round reads
 * its level from, after a restart too.
 */
export async function recordDecision(reg: Registry, version: string, d: GateDecision, extra: Record<string, unknown> = {}): Promise<VersionInfo> {
  const figures = Object.fromEntries(d.checks.map((c) => [c.check, { status: c.status, reason: c.reason, alpha: c.alpha, comparisons: c.comparisons, ...c.figures }]));
  const gate: GateRecord = { decision: d.decision, reasons: d.reasons, figures: { ...figures, ...extra }, decided_at: new Date().toISOString(),
    ...(d.level === undefined ? {} : { level: d.level }) };
  const v = await reg.recordGate(version, gate);
  await reg.audit('gate.decision', { version, decision: d.decision, reasons: d.reasons, figures, ...(d.level === undefined ? {} : { level: d.level }) });
  return v;
}

/** A person's answer to a hold, checked against the manifest as read under the registry's lock. */
async function answerHold(reg: Registry, version: string, approved: boolean, by: string, note: string | undefined): Promise<VersionInfo> {
  const v = reg.get(version);
  if (v === undefined) throw new AligndError('CONFIG_INVALID', `${reg.model} has no version ${version}`, { action: 'list the versions in the registry' });
  // A promoted version that probation held at max_hours is answered here too.
  if (v.manifest.probation?.status === 'held') return answerProbationHold(reg, v, approved, by, note);
  let heldFor: string[] = [];
  const out = await reg.updateGate(version, (now) => {
    const g = now.manifest.gate;
    if (g === null) throw new AligndError('CONFIG_INVALID', `${reg.model} ${version} has not been through the gate`, { action: 'wait for its evaluation' });
    if (g.decision !== 'hold') throw new AligndError('CONFIG_INVALID', `${reg.model} ${version} was decided "${g.decision}", not held`, { action: 'only held candidates await approval' });
    if (g.approval !== undefined) throw new AligndError('CONFIG_INVALID', `${reg.model} ${version} was already ${g.approval.approved ? 'approved' : 'denied'} by ${g.approval.by} at ${g.approval.at}`);
    heldFor = g.reasons;
    return { ...g, approval: { approved, by, at: new Date().toISOString(), ...(note === undefined ? {} : { note }) } };
  });
  await reg.audit(approved ? 'gate.approved' : 'gate.denied', { version, by, note: note ?? null, held_for: heldFor });
  return out;
}

export const approveCandidate = (reg: Registry, version: string, by: string, note?: string): Promise<VersionInfo> => answerHold(reg, version, true, by, note);
export const denyCandidate = (reg: Registry, version: string, by: string, note?: string): Promise<VersionInfo> => answerHold(reg, version, false, by, note);

/** The decision in force: the gate's, or a person's answer to a hold. */
export function effectiveDecision(v: VersionInfo): 'promote' | 'reject' | 'hold' | 'pending' {
  const g = v.manifest.gate;
  if (g === null) return 'pending';
  if (g.decision === 'hold' && g.approval !== undefined) return g.approval.approved ? 'promote' : 'reject';
  return g.decision;
}
