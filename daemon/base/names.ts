/**
 * Names the registry puts on disk and on inference servers. Model names become directory names
 * and server-side adapter names, so they are restricted to a safe alphabet (no `/`, no `..`).
 */
import { AligndError } from './errors.js';

/** Letters, digits, `.`, `_`, `-`; starts with a letter or digit; at most 64 characters. */
export const MODEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const VERSION_RE = /^v([1-9][0-9]{0,8})$/;

/**
 * Why a model name is not allowed, or undefined. Besides the safe alphabet, a name may not end in
 * `-v<digits>`: served names are `<model>-v<N>` and file-drop puts `<dir>/<model>-vN/` beside the
 * link `<dir>/<model>`, so model `a-v1` would collide with version v1 of model `a`.
 */
export function modelNameProblem(model: string): string | undefined {
  if (!MODEL_NAME_RE.test(model) || model.includes('..')) return 'use letters, digits, ".", "_" or "-" (starting with a letter or digit, at most 64 characters, no "..")';
  if (/-v[0-9]+$/.test(model)) return `a model name may not end in "-v<N>": that is how versions are named (${model.replace(/-v[0-9]+$/, '')} version ${model.replace(/^.*-(v[0-9]+)$/, '$1')} would be served as ${model})`;
  return undefined;
}

export function validateModelName(model: string): string {
  const problem = modelNameProblem(model);
  if (problem !== undefined) throw new AligndError('CONFIG_INVALID', `model name ${JSON.stringify(model)} is not allowed`, { action: problem });
  return model;
}

export function parseVersion(v: string): number {
  const m = VERSION_RE.exec(v);
  if (m === null) throw new AligndError('CONFIG_INVALID', `version ${JSON.stringify(v)} is not of the form vN (v1, v2, ...)`, { action: 'name a version as the registry lists it' });
  return Number(m[1]);
}

export const versionName = (n: number): string => `v${n}`;

/** The immutable server-side adapter name of a version: `<model>-v<N>`. Never reused for other weights. */
export const servedName = (model: string, version: string): string => `${model}-${version}`;

/** Matches the served names of `model`'s versions (`<model>-v<N>`) and nothing else a server lists. */
export const servedNamePattern = (model: string): RegExp => new RegExp(`^${model.replace(/[.]/g, '\\.')}-v[0-9]+$`);
