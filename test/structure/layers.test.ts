/**
 * The layering holds: every import under daemon/ and adapters/ (static `import ... from`,
 * `export ... from`, `import type`, dynamic `import('...')`, `import('...').Type`) stays within
 * the stages its file's stage may import by daemon/layers.ts; every file belongs to a stage in
 * the table; the table itself has no cycle, and only the composition root wires adapters.
 * Imports are read with TypeScript's own parser, so comments and strings never count.
 */
import t from 'tap';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { repoRoot } from '../harness/daemon.js';
import { STAGES } from '../../daemon/layers.js';
import { stageDir } from './stage-dirs.js';

/** Every module specifier a TypeScript source imports or re-exports. */
export function importsOf(source: string, fileName = 'x.ts'): string[] {
  const sf = ts.createSourceFile(fileName, source, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier !== undefined && ts.isStringLiteral(node.moduleSpecifier)) {
      out.push(node.moduleSpecifier.text);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference) && ts.isStringLiteral(node.moduleReference.expression)) {
      out.push(node.moduleReference.expression.text);
    } else if (ts.isCallExpression(node) && (node.expression.kind === ts.SyntaxKind.ImportKeyword
      || (ts.isIdentifier(node.expression) && node.expression.text === 'require'))) {
      const arg = node.arguments[0];
      // A computed specifier cannot be checked here: refuse it so that it is seen.
      out.push(arg !== undefined && ts.isStringLiteralLike(arg) ? arg.text : '<computed>');
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      out.push(node.argument.literal.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return out;
}

/** The stage a repository path belongs to, or undefined (outside daemon/ and adapters/). */
export function stageOf(path: string): string | undefined {
  const parts = path.split('/');
  if (parts[0] === 'adapters' && parts.length >= 3) return `adapters/${parts[1]}`;
  if (parts[0] !== 'daemon') return undefined;
  return parts.length === 2 ? 'main' : parts[1];
}

const allowed = (stage: string): readonly string[] => STAGES[stage]?.imports ?? [];

/** The broken rules of one file: `file → stage dir (path): stage may import ...`. */
export function violations(file: string, source: string): string[] {
  const from = stageOf(file);
  if (from === undefined || STAGES[from] === undefined) return [`${file}: belongs to no stage of daemon/layers.ts (add its folder to the table on purpose)`];
  const out: string[] = [];
  for (const spec of importsOf(source, file)) {
    if (spec === '<computed>') {
      out.push(`${file}: an import with a computed specifier cannot be checked against the stage table`);
      continue;
    }
    if (!spec.startsWith('.')) continue; // node: built-ins and packages
    const target = relative(repoRoot, resolve(repoRoot, dirname(file), spec)).replace(/\.js$/, '.ts');
    const to = stageOf(target);
    const where = target.replace(/^(daemon|adapters)\//, '');
    if (to === undefined) {
      out.push(`${file} → ${target}: outside daemon/ and adapters/`);
      continue;
    }
    if (to === from || allowed(from).includes(to)) continue;
    const may = allowed(from);
    out.push(`${file} → ${stageDir(to)} (${where}): ${from} may import ${may.length === 0 ? 'nothing else' : may.join(', ')}`);
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(join(repoRoot, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => relative(repoRoot, join(e.parentPath, e.name)))
    .sort();
}

/** A cycle in the table (as a path of stages), or undefined. */
export function findCycle(stages: Readonly<Record<string, { imports: readonly string[] }>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const path: string[] = [];
  const dfs = (s: string): string[] | undefined => {
    if (state.get(s) === 'done') return undefined;
    if (state.get(s) === 'open') return [...path.slice(path.indexOf(s)), s];
    state.set(s, 'open');
    path.push(s);
    for (const n of stages[s]?.imports ?? []) {
      const c = dfs(n);
      if (c !== undefined) return c;
    }
    path.pop();
    state.set(s, 'done');
    return undefined;
  };
  for (const s of Object.keys(stages)) {
    const c = dfs(s);
    if (c !== undefined) return c;
  }
  return undefined;
}

t.test('the import reader sees every form of import, and nothing in comments or strings', async (t) => {
  const src = [
    "/* import a from './c1.js' */ // import b from './c2.js'",
    "import type { A } from './a.js';",
    "import {\n  b,\n  c } from './b.js';",
    "import * as ns from './ns.js';",
    "import './side.js';",
    "export * as ops from './ops.js';",
    "export { d } from './d.js';",
    "export type { E } from './e.js';",
    "const m = await import('./dyn.js');",
    "let x: import('./typeonly.js').T;",
    "const s = \"import z from './str.js'\";",
    'const n = await import(name);',
  ].join('\n');
  t.same(importsOf(src), ['./a.js', './b.js', './ns.js', './side.js', './ops.js', './d.js', './e.js', './dyn.js', './typeonly.js', '<computed>']);
});

t.test('a forbidden import is named with its file, the stage it reaches and what is allowed', async (t) => {
  t.same(violations('daemon/stats/binomial.ts', "import { createRng } from '../model/rng.js';"),
    ['daemon/stats/binomial.ts → daemon/model (model/rng.ts): stats may import base']);
  t.same(violations('daemon/config/process-config.ts', "import { kafkaSourceConfigSchema } from '../../adapters/sources/kafka-config.js';"),
    ['daemon/config/process-config.ts → adapters/sources (sources/kafka-config.ts): config may import base, engine, feedback, ingest']);
  t.same(violations('daemon/base/log.ts', "const x = await import('../store/buffer.js');"),
    ['daemon/base/log.ts → daemon/store (store/buffer.ts): base may import nothing else']);
  t.same(violations('daemon/whatever/x.ts', ''), ['daemon/whatever/x.ts: belongs to no stage of daemon/layers.ts (add its folder to the table on purpose)']);
  t.same(violations('daemon/gate/decide.ts', "import { z } from 'zod';\nimport type { GatePolicy } from '../policy/schema.js';\nimport { mean } from './stats.js';"), [],
    'packages, allowed stages and the own stage are fine');
});

t.test('every import under daemon/ and adapters/ keeps to the stage table', async (t) => {
  const files = [...sourceFiles('daemon'), ...sourceFiles('adapters')];
  t.ok(files.length > 100, `${files.length} files`);
  const edges = new Set<string>();
  const problems: string[] = [];
  for (const f of files) {
    const src = readFileSync(join(repoRoot, f), 'utf8');
    problems.push(...violations(f, src));
    for (const spec of importsOf(src, f).filter((s) => s.startsWith('.'))) {
      const to = stageOf(relative(repoRoot, resolve(repoRoot, dirname(f), spec)));
      if (to !== undefined && to !== stageOf(f)) edges.add(`${stageOf(f)} → ${to}`);
    }
  }
  t.same(problems, [], 'imports that break daemon/layers.ts');
  t.ok(edges.size > 30, `${edges.size} stage-to-stage edges in use`);
  const unused = Object.entries(STAGES).flatMap(([s, st]) => st.imports.filter((i) => !edges.has(`${s} → ${i}`)).map((i) => `${s} → ${i}`));
  t.comment(`allowed but unused edges: ${unused.join('; ') || 'none'}`);
});

t.test('the stage table: known stages only, no cycle, adapters wired only by the composition root', async (t) => {
  for (const [s, st] of Object.entries(STAGES)) {
    t.notOk(st.imports.includes(s), `${s} does not list itself`);
    for (const i of st.imports) t.ok(STAGES[i] !== undefined, `${s} → ${i}: a stage of the table`);
    if (s !== 'main') t.same(st.imports.filter((i) => i.startsWith('adapters/')), [], `${s} imports no adapter`);
    t.ok(st.owns.length > 0, `${s} says what it owns`);
  }
  t.equal(findCycle(STAGES), undefined, 'no cycle between stages');
  t.same(findCycle({ a: { imports: ['b'] }, b: { imports: ['c'] }, c: { imports: ['a'] } }), ['a', 'b', 'c', 'a'], 'the cycle check finds one');
});
