/**
 * The job's code (trainers/trl/alignd_trl, Python) travels through the shared storage like the
 * data: copied once per content hash to <storage>/code/alignd_trl-<hash>/ and put on the job's
 * PYTHONPATH. Its dependencies are pinned in trainers/trl/requirements.txt and installed by the
 * engine (Ray's runtime_env pip), so the cluster needs nothing of alignd installed beforehand.
 */
import { cpSync, existsSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AligndError } from '../base/errors.js';

/** trainers/trl in this alignd (the repo, or the installed package: package.json `files`). */
export function trainerSourceDir(): string {
  const root = resolve(fileURLToPath(import.meta.url), '../../..').replace(/\/dist$/, '');
  const dir = join(root, 'trainers', 'trl');
  if (!existsSync(join(dir, 'alignd_trl', '__main__.py'))) {
    throw new AligndError('CONFIG_INVALID', `the training job's code is missing (${dir}/alignd_trl)`, { action: 'reinstall alignd: trainers/trl ships with it' });
  }
  return dir;
}

/** The pinned requirement lines of trainers/trl/requirements.txt (comments and blanks dropped). */
export function trainerRequirements(dir = trainerSourceDir()): string[] {
  return readFileSync(join(dir, 'requirements.txt'), 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim()).filter((l) => l !== '');
}

/** Copy the job's package to <root>/code/alignd_trl-<hash>/ unless there; returns that directory's name. */
export function publishJobCode(root: string, dir = trainerSourceDir()): string {
  const pkg = join(dir, 'alignd_trl');
  const h = createHash('sha256');
  for (const f of readdirSync(pkg).filter((f) => f.endsWith('.py')).sort()) h.update(`${f}\0`).update(readFileSync(join(pkg, f)));
  const name = `alignd_trl-${h.digest('hex').slice(0, 16)}`;
  const target = join(root, 'code', name);
  if (!existsSync(target)) {
    // Two alignd processes may publish at once: each copies aside and renames; the loser's copy is dropped.
    const tmp = `${target}.tmp-${randomBytes(4).toString('hex')}`;
    cpSync(pkg, join(tmp, 'alignd_trl'), { recursive: true, filter: (s) => !s.includes('__pycache__') });
    try {
      renameSync(tmp, target);
    } catch {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  return join('code', name);
}
