/**
 * What the policy's deployment mode means for promotion:
 * - `auto`: a candidate whose effective decision is `promote` is pushed.
 * - `pinned: vN`: vN is served everywhere (this is rollback); candidates are still evaluated and
 *   recorded but never pushed.
 * - `frozen`: the current version stays; nothing is trained or pushed.
 */
import type { Logger } from '../base/log.js';
import type { Deployment } from '../policy/schema.js';
import { promote, reconcile, type PromoteOptions, type PromoteResult } from '../registry/promote.js';
import type { Registry, VersionInfo } from '../registry/registry.js';
import { effectiveDecision } from './decisions.js';

/**
 * Make the servers match a pinned deployment (call on start and after each applied policy). A new
 * pin preempts whatever push is in hand (a hung server must not delay a rollback); an old pin is
 * one reconcile pass against what the servers list.
 */
export async function enforceDeployment(reg: Registry, deployment: Deployment, opts: Omit<PromoteOptions, 'reason'>): Promise<PromoteResult | undefined> {
  if (deployment.mode !== 'pinned') return undefined;
  const s = reg.deployment();
  if (s?.desired === deployment.version) return reconcile(reg, opts);
  reg.audit('deployment.pinned', { version: deployment.version, previous: s?.desired ?? null });
  return promote(reg, deployment.version, { ...opts, reason: `pinned by policy (${deployment.version})`, preempt: true });
}

/** One pass of the deployment controller: the pin when there is one, else the registry's desired version. */
export function convergeDeployment(reg: Registry, deployment: Deployment, opts: Omit<PromoteOptions, 'reason'>): Promise<PromoteResult | undefined> {
  return deployment.mode === 'pinned' ? enforceDeployment(reg, deployment, opts) : reconcile(reg, opts);
}

/** After a decision (or an approval): push the candidate when the mode allows it. */
export async function promoteIfAllowed(reg: Registry, v: VersionInfo, deployment: Deployment, opts: Omit<PromoteOptions, 'reason'> & { log?: Logger }): Promise<PromoteResult | undefined> {
  const d = effectiveDecision(v);
  if (d !== 'promote') return undefined;
  if (deployment.mode !== 'auto') {
    reg.audit('promote.skipped', { version: v.version, mode: deployment.mode, reason: `deployment mode ${deployment.mode} keeps the served version` });
    return undefined;
  }
  const approved = v.manifest.gate?.approval?.approved === true;
  return promote(reg, v.version, { ...opts, reason: approved ? `approved by ${v.manifest.gate?.approval?.by}` : 'gate' });
}

/**
 * The newest version whose effective decision is `promote` and that is newer than the deployed
 * one: what the daemon's loop pushes in `auto` mode after an approval given elsewhere (the CLI
 * writes the approval to the registry; the daemon notices it here).
 */
export function nextToPromote(reg: Registry): VersionInfo | undefined {
  const deployed = reg.deployment()?.desired;
  const floor = deployed === undefined ? 0 : Number(deployed.slice(1));
  const candidates = reg.list().filter((v) => v.number > floor && effectiveDecision(v) === 'promote');
  return candidates.at(-1);
}
