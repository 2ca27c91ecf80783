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

/** Comments alignd writes on the deployment start with this; an edit replaces them, never a person's own. */
export const ALIGND_NOTE = 'alignd:';

/**
 * The policy text with `deployment` replaced. `note` (one line) is left as a comment on it, e.g. why
 * alignd rolled back, so `git diff` of the policy tells the story; a person's comment stays.
 */
export function setDeploymentInText(text: string, deployment: Deployment, note?: string): string {
  const doc = parseDocument(text);
  // The first line of yaml's message (its excerpt of the file follows on the next lines).
  if (doc.errors.length > 0) throw new AligndError('POLICY_INVALID', `the policy is not valid YAML: ${doc.errors[0]?.message.split('\n')[0] ?? ''}`, { action: 'fix the file first (alignd policy check FILE)' });
  const value = deployment.mode === 'pinned' ? { mode: 'pinned', version: deployment.version } : deployment.mode;
  const node = doc.createNode(value) as unknown as { commentBefore?: string | null; comment?: string | null };
  const found = doc.getIn(['deployment']) === undefined ? undefined : doc.get('deployment', true);
  const existing = typeof found === 'object' && found !== null ? found as { commentBefore?: string | null; comment?: string | null } : undefined;
  // Keep the comments attached to the old node, except the lines of a note alignd wrote for an earlier edit.
  const kept = (existing?.comment ?? '').split('\n').filter((l) => l.trim() !== '' && !l.trimStart().startsWith(ALIGND_NOTE));
  if (note !== undefined) kept.push(` ${ALIGND_NOTE} ${note.replace(/\s+/g, ' ').trim()}`);
  node.commentBefore = existing?.commentBefore ?? null;
  node.comment = kept.length === 0 ? null : kept.join('\n');
  doc.set('deployment', node);
  return doc.toString();
}

/** Set the deployment of a policy file; returns the validated policy as written. */
export function editDeployment(file: string, deployment: Deployment, ctx: PolicyContext = {}, note?: string): Policy {
  const before = readFileSync(file, 'utf8');
  const after = setDeploymentInText(before, deployment, note);
  const r = parsePolicyText(after, file, ctx);
  if (!r.ok) throw new AligndError('POLICY_INVALID', `the edited policy would be invalid:\n${formatProblems(r.problems)}`, { action: 'the file was left unchanged' });
  writeFileAtomicDurable(file, after);
  return r.policy;
}
