/**
 * What the policy's deployment mode means for promotion:
 * - `auto`: a candidate whose effective decision is `promote` is pushed — unless another version
 *   is on probation (it waits), or it was rolled back (never again by itself); with `rollout`
 *   enabled its promotion starts probation (./probation.ts).
 * - `pinned: vN`: vN is served everywhere (this is rollback); candidates are still evaluated and
 *   recorded but never pushed.
 * - `frozen`: the current version stays; nothing is trained or pushed.
 */
import type { Logger } from '../base/log.js';
import type { Deployment, RolloutPolicy } from '../policy/schema.js';
import { promote, reconcile, type PromoteOptions, type PromoteResult } from '../registry/promote.js';
import type { Registry, VersionInfo } from '../registry/registry.js';
import { effectiveDecision } from './decisions.js';
import { beginProbation, endProbationByPin, isRolledBack, openProbation } from './probation.js';

/**
 * Make the servers match a pinned deployment (call on start and after each applied policy). A new
 * pin preempts whatever push is in hand (a hung server must not delay a rollback); an old pin is
 * one reconcile pass against what the servers list.
 */
export async function enforceDeployment(reg: Registry, deployment: Deployment, opts: Omit<PromoteOptions, 'reason'>): Promise<PromoteResult | undefined> {
  if (deployment.mode !== 'pinned') return undefined;
  const s = reg.deployment();
  if (s?.desired === deployment.version) {
    await endProbationByPin(reg, deployment.version); // a pin of the version on probation keeps it
    return reconcile(reg, opts);
  }
  await reg.audit('deployment.pinned', { version: deployment.version, previous: s?.desired ?? null });
  const reason = await endProbationByPin(reg, deployment.version);
  return promote(reg, deployment.version, { ...opts, reason, canary: null, preempt: true });
}

/** One pass of the deployment controller: the pin when there is one, else the registry's desired version. */
export function convergeDeployment(reg: Registry, deployment: Deployment, opts: Omit<PromoteOptions, 'reason'>): Promise<PromoteResult | undefined> {
  return deployment.mode === 'pinned' ? enforceDeployment(reg, deployment, opts) : reconcile(reg, opts);
}

/** After a decision (or an approval): push the candidate when the mode allows it. */
export async function promoteIfAllowed(reg: Registry, v: VersionInfo, deployment: Deployment,
  opts: Omit<PromoteOptions, 'reason' | 'canary'> & { log?: Logger; rollout?: RolloutPolicy }): Promise<PromoteResult | undefined> {
  const d = effectiveDecision(v);
  if (d !== 'promote') return undefined;
  if (deployment.mode !== 'auto') {
    await reg.audit('promote.skipped', { version: v.version, mode: deployment.mode, reason: `deployment mode ${deployment.mode} keeps the served version` });
    return undefined;
  }
  if (isRolledBack(v)) {
    await reg.audit('promote.skipped', { version: v.version, reason: `${v.version} was rolled back after probation; only a pin serves it again` });
    return undefined;
  }
  const open = openProbation(reg);
  if (open !== undefined && open.version !== v.version) {
    await reg.audit('promote.deferred', { version: v.version, on_probation: open.version, reason: `${open.version} is on probation; ${v.version} waits until it is stable` });
    opts.log?.info('promotion deferred: another version is on probation', { version: v.version, on_probation: open.version });
    return undefined;
  }
  const { rollout, ...promotion } = opts;
  const canary = open === undefined ? await beginProbation(reg, v, rollout) : undefined;
  const approved = v.manifest.gate?.approval?.approved === true;
  return promote(reg, v.version, { ...promotion, reason: approved ? `approved by ${v.manifest.gate?.approval?.by}` : 'gate', ...(canary === undefined ? {} : { canary }) });
}

/**
 * The newest version whose effective decision is `promote` and that is newer than the deployed
 * one: what the daemon's loop pushes in `auto` mode after an approval given elsewhere (the CLI
 * writes the approval to the registry; the daemon notices it here), or after a probation that held
 * it back ended (none while one is open). Never a rolled-back version, nor a candidate whose gate
 * compared it with one.
 */
export function nextToPromote(reg: Registry): VersionInfo | undefined {
  if (openProbation(reg) !== undefined) return undefined; // candidates wait for the version on probation
  const deployed = reg.deployment()?.desired;
  const floor = deployed === undefined ? 0 : Number(deployed.slice(1));
  const all = reg.list();
  const rolledBack = new Set(all.filter(isRolledBack).map((v) => v.version));
  const candidates = all.filter((v) => v.number > floor && effectiveDecision(v) === 'promote' && !rolledBack.has(v.version)
    && !(v.manifest.parent !== null && rolledBack.has(v.manifest.parent)));
  return candidates.at(-1);
}
