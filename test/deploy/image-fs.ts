/**
 * Lays out, under a temp directory, the files the image's final stage contains, by following its
 * COPY, WORKDIR, VOLUME and (mkdir-only) RUN instructions — so the container-start test runs the daemon from exactly
 * the files the image ships, not from the whole checkout (a module the image forgets to copy
 * fails here).
 *
 * Sources: `COPY --from=<stage> /app/...` reads this checkout, because the build stages' /app is
 * the repository after `npm ci && npm run build`, which is what `npm test` has just done here.
 * node_modules is linked, not copied (hundreds of MB): it is the full install of this checkout, so
 * whether the production dependencies alone suffice is checked separately, statically
 * (image-contents.test.ts).
 */
import { cpSync, existsSync, mkdirSync, statSync, symlinkSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import type { Copy } from 'dockerfile-ast';
import { repoRoot } from '../harness/daemon.js';
import { parseDockerfile } from './dockerfile.js';

export interface ImageFs {
  root: string;
  /** A container path (absolute) → its place under root. */
  hostPath(p: string): string;
}

export function layOutImage(text: string, root: string): ImageFs {
  const stage = parseDockerfile(text).stages.at(-1);
  if (stage === undefined) throw new Error('no final stage');
  const hostPath = (p: string): string => join(root, p);
  let workdir = '/';
  for (const ins of stage.instructions) {
    const k = ins.getKeyword();
    if (k === 'WORKDIR') {
      workdir = posix.resolve(workdir, ins.getArgumentsContent() ?? '/');
      mkdirSync(hostPath(workdir), { recursive: true });
    } else if (k === 'VOLUME') {
      for (const v of ins.getArguments().map((a) => a.getValue().replace(/[[\]",]/g, '')).filter(Boolean)) mkdirSync(hostPath(v), { recursive: true });
    } else if (k === 'RUN') {
      // The final stage may only make directories (and set their owner, which a test run as this
      // user need not copy); anything else would change the image in ways not laid out here.
      for (const step of (ins.getArgumentsContent() ?? '').split('&&').map((x) => x.trim())) {
        const words = step.split(/\s+/);
        if (words[0] === 'mkdir') for (const d of words.slice(1).filter((w) => !w.startsWith('-'))) mkdirSync(hostPath(posix.resolve(workdir, d)), { recursive: true });
        else if (words[0] !== 'chown') throw new Error(`final-stage RUN step not understood by image-fs.ts: ${step}`);
      }
    } else if (k === 'COPY') {
      const from = (ins as Copy).getFromFlag()?.getValue() ?? null;
      const args = ins.getArguments().map((a) => a.getValue());
      const dest = posix.resolve(workdir, args.at(-1) ?? '.');
      const intoDir = (args.at(-1) ?? '').endsWith('/') || args.length > 2;
      for (const src of args.slice(0, -1)) {
        // Every build stage works in /app on a copy of this repository.
        const source = from === null ? join(repoRoot, src) : join(repoRoot, posix.relative('/app', src));
        if (!existsSync(source)) throw new Error(`COPY ${from === null ? '' : `--from=${from} `}${src}: ${source} does not exist (run npm run build)`);
        const target = intoDir && !statSync(source).isDirectory() ? join(hostPath(dest), basename(source)) : hostPath(dest);
        mkdirSync(dirname(target), { recursive: true });
        if (basename(source) === 'node_modules') symlinkSync(source, target, 'dir');
        else cpSync(source, target, { recursive: true });
      }
    }
  }
  return { root, hostPath };
}
