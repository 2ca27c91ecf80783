/**
 * Secrets by environment reference: a policy field written `${NAME}` holds the name of an
 * environment variable, never the secret itself.
 */
import { AligndError } from './errors.js';

export const ENV_REF_RE = /^\$\{([A-Z_][A-Z0-9_]*)\}$/;

/** The variable a `${NAME}` reference names (undefined for anything else). */
export const envRefName = (value: string | undefined): string | undefined => (value === undefined ? undefined : ENV_REF_RE.exec(value)?.[1]);

/** The value behind a `${NAME}` reference; CONFIG_INVALID naming `where` when the variable is unset or empty. */
export function resolveEnvRef(ref: string, where: string, env: NodeJS.ProcessEnv = process.env): string {
  const name = envRefName(ref);
  if (name === undefined) throw new AligndError('CONFIG_INVALID', `${where} must be an environment reference such as \${API_KEY}`, { action: 'put the secret in an environment variable and name it here' });
  const v = env[name] ?? '';
  if (v === '') throw new AligndError('CONFIG_INVALID', `${where} references \${${name}} but that environment variable is not set`, { action: `export ${name}` });
  return v;
}
