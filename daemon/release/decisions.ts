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

export function recordDecision(reg: Registry, version: string, d: GateDecision, extra: Record<string, unknown> = {}): VersionInfo {
  const figures = Object.fromEntries(d.checks.map((c) => [c.check, { status: c.status, reason: c.reason, ...c.figures }]));
  const gate: GateRecord = { decision: d.decision, reasons: d.reasons, figures: { ...figures, ...extra }, decided_at: new Date().toISOString() };
  const v = reg.recordGate(version, gate);
  reg.audit('gate.decision', { version, decision: d.decision, reasons: d.reasons, figures });
  return v;
}

function answerHold(reg: Registry, version: string, approved: boolean, by: string, note: string | undefined): VersionInfo {
  const v = reg.get(version);
  if (v === undefined) throw new AligndError('CONFIG_INVALID', `${reg.model} has no version ${version}`, { action: 'list the versions in the registry' });
  // A promoted version that probation held at max_hours is answered here too.
  if (v.manifest.probation?.status === 'held') return answerProbationHold(reg, v, approved, by, note);
  const g = v.manifest.gate;
  if (g === null) throw new AligndError('CONFIG_INVALID', `${reg.model} ${version} has not been through the gate`, { action: 'wait for its evaluation' });
  if (g.decision !== 'hold') throw new AligndError('CONFIG_INVALID', `${reg.model} ${version} was decided "${g.decision}", not held`, { action: 'only held candidates await approval' });
  if (g.approval !== undefined) throw new AligndError('CONFIG_INVALID', `${reg.model} ${version} was already ${g.approval.approved ? 'approved' : 'denied'} by ${g.approval.by} at ${g.approval.at}`);
  const approval = { approved, by, at: new Date().toISOString(), ...(note === undefined ? {} : { note }) };
  const out = reg.recordGate(version, { ...g, approval });
  reg.audit(approved ? 'gate.approved' : 'gate.denied', { version, by, note: note ?? null, held_for: g.reasons });
  return out;
}

export const approveCandidate = (reg: Registry, version: string, by: string, note?: string): VersionInfo => answerHold(reg, version, true, by, note);
export const denyCandidate = (reg: Registry, version: string, by: string, note?: string): VersionInfo => answerHold(reg, version, false, by, note);

/** The decision in force: the gate's, or a person's answer to a hold. */
export function effectiveDecision(v: VersionInfo): 'promote' | 'reject' | 'hold' | 'pending' {
  const g = v.manifest.gate;
  if (g === null) return 'pending';
  if (g.decision === 'hold' && g.approval !== undefined) return g.approval.approved ? 'promote' : 'reject';
  return g.decision;
}
