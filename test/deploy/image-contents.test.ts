/**
 * What the image ships must be enough on its own: every module under the dist/ folders the final
 * stage copies imports only Node built-ins, packages from package.json "dependencies" (the only
 * ones `npm ci --omit=dev` installs), and files inside those same folders. Checked on the compiled
 * JavaScript, statically, because a production-only install cannot be made offline here.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import type { Copy } from 'dockerfile-ast';
import { repoRoot } from '../harness/daemon.js';
import { parseDockerfile, readDockerfile } from './dockerfile.js';

const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };

/** The dist/ folders the final stage copies from the build stage. */
const shipped = (parseDockerfile(readDockerfile()).stages.at(-1)?.instructions ?? [])
  .filter((i) => i.getKeyword() === 'COPY' && (i as Copy).getFromFlag()?.getValue() === 'build')
  .map((i) => i.getArguments()[0]?.getValue().replace(/^\/app\//, '') ?? '')
  .filter((p) => p.startsWith('dist/'));

const IMPORT = /(?:^|[;\s])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|(?:^|[^.\w])import\s*\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s*['"]([^'"]+)['"]/gm;

export function importsOf(js: string): string[] {
  return [...js.matchAll(IMPORT)].map((m) => m[1] ?? m[2] ?? m[3] ?? '').filter(Boolean);
}

/** Problems with one module's imports; `file` is relative to the repository. */
export function importProblems(file: string, js: string, roots: string[], deps: Record<string, string>): string[] {
  const out: string[] = [];
  for (const spec of importsOf(js)) {
    if (spec.startsWith('node:') || builtinModules.includes(spec)) continue;
    if (spec.startsWith('.')) {
      const target = relative(repoRoot, resolve(repoRoot, dirname(file), spec));
      if (!roots.some((r) => target === r || target.startsWith(r + '/'))) out.push(`${file}: imports ${spec} (${target}), which the image does not ship`);
      continue;
    }
    const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0] ?? spec;
    if (!(name in deps)) out.push(`${file}: imports ${name}, not in package.json dependencies (npm ci --omit=dev leaves it out)`);
  }
  return out;
}

function jsFiles(dir: string): string[] {
  return readdirSync(join(repoRoot, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.js'))
    .map((e) => relative(repoRoot, join(e.parentPath, e.name)));
}

t.test('the image ships the compiled daemon and adapters', async (t) => {
  t.same([...shipped].sort(), ['dist/adapters', 'dist/daemon']);
});

t.test('every shipped module imports only built-ins, production dependencies and shipped files', async (t) => {
  const files = shipped.flatMap(jsFiles);
  t.ok(files.length > 20, `${files.length} modules`);
  t.ok(files.includes('dist/daemon/main.js'), 'main.js among them');
  const problems = files.flatMap((f) => importProblems(f, readFileSync(join(repoRoot, f), 'utf8'), shipped, pkg.dependencies));
  t.same(problems, []);
  t.ok(importsOf(readFileSync(join(repoRoot, 'dist/daemon/main.js'), 'utf8')).some((s) => s === './config/process-config.js'), 'the import reader sees main.js\'s imports');
});

t.test('the check catches a dev-only package and an unshipped file', async (t) => {
  const js = "import t from 'tap';\nimport { x } from '../../bench/engine.js';\nconst m = await import('kafkajs');\nimport 'node:fs';\n";
  t.same(importsOf(js), ['tap', '../../bench/engine.js', 'kafkajs', 'node:fs']);
  const p = importProblems('dist/daemon/x/y.js', js, shipped, pkg.dependencies);
  t.match(p, [/imports tap, not in package.json dependencies/, /bench\/engine\.js.*does not ship/]);
  t.ok('tap' in pkg.devDependencies, 'tap is a dev dependency');
});
