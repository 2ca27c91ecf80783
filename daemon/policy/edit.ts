/**
 * Edits of a policy file that keep it the source of truth: change `deployment` through the yaml
 * Document API (comments and layout elsewhere stay as the operator wrote them), validate the
 * result as the watcher will, and replace the file atomically.
 */
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { AligndError } from '../base/errors.js';
import { writeFileAtomicDurable } from '../base/fs-durable.js';
import { formatProblems, parsePolicyText, type PolicyContext } from './load.js';
import type { Deployment, Policy } from './schema.js';

export function setDeploymentInText(text: string, deployment: Deployment): string {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new AligndError('POLICY_INVALID', `the policy is not valid YAML: ${doc.errors[0]?.message ?? ''}`, { action: 'fix the file first (alignd policy check FILE)' });
  const value = deployment.mode === 'pinned' ? { mode: 'pinned', version: deployment.version } : deployment.mode;
  const existing = doc.get('deployment', true);
  if (existing !== undefined && doc.getIn(['deployment']) !== undefined) {
    // Keep the comment attached to the old node.
    const node = doc.createNode(value);
    const old = doc.get('deployment', true) as { commentBefore?: string | null; comment?: string | null };
    const fresh = node as unknown as { commentBefore?: string | null; comment?: string | null };
    if (typeof old === 'object' && old !== null) {
      fresh.commentBefore = old.commentBefore ?? null;
      fresh.comment = old.comment ?? null;
    }
    doc.set('deployment', node);
  } else {
    doc.set('deployment', value);
  }
  return doc.toString();
}

/** Set the deployment of a policy file; returns the validated policy as written. */
export function editDeployment(file: string, deployment: Deployment, ctx: PolicyContext = {}): Policy {
  const before = readFileSync(file, 'utf8');
  const after = setDeploymentInText(before, deployment);
  const r = parsePolicyText(after, file, ctx);
  if (!r.ok) throw new AligndError('POLICY_INVALID', `the edited policy would be invalid:\n${formatProblems(r.problems)}`, { action: 'the file was left unchanged' });
  writeFileAtomicDurable(file, after);
  return r.policy;
}
