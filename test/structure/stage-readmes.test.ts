/**
 * Every stage of daemon/layers.ts (but the composition root, daemon/ itself) has a README.md in
 * its folder that says what it owns (`**Owns:** ...`, not empty) and what it may import
 * (`**May import:** `a`, `b`` or `nothing`), the latter exactly the table's list in the table's
 * order. So a change of the table that leaves a README behind fails here, naming the file. The
 * top README's layout table links every stage README.
 */
import t from 'tap';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../harness/daemon.js';
import { STAGES, type Stage } from '../../daemon/layers.js';
import { stageDir } from './stage-dirs.js';

/** The `**May import:**` list of a README, or a reason it cannot be read. */
export function mayImportOf(text: string): { imports: string[] } | { problem: string } {
  const lines = [...text.matchAll(/^\*\*May import:\*\*(.*)$/gm)].map((m) => (m[1] ?? '').trim());
  if (lines.length !== 1) return { problem: `has ${lines.length} "**May import:**" lines, wants one` };
  const value = lines[0] ?? '';
  if (value === 'nothing') return { imports: [] };
  const items = value.split(',').map((s) => s.trim());
  const names = items.map((s) => /^`([^`]+)`$/.exec(s)?.[1]);
  if (value === '' || names.some((n) => n === undefined)) {
    return { problem: `"**May import:** ${value}" is not \`nothing\` or a list of \`stage\`s separated by commas` };
  }
  return { imports: names as string[] };
}

/** What is wrong with the stage READMEs under `root` against `stages`: one line per README. */
export function readmeProblems(root: string, stages: Readonly<Record<string, Stage>>): string[] {
  const out: string[] = [];
  for (const [stage, { imports }] of Object.entries(stages)) {
    if (stage === 'main') continue;
    const file = `${stageDir(stage)}/README.md`;
    const path = join(root, file);
    if (!existsSync(path)) {
      out.push(`${file}: missing (every stage of daemon/layers.ts has one: title, **Owns:**, **May import:**, **Public surface:**)`);
      continue;
    }
    const text = readFileSync(path, 'utf8');
    if (!/^\*\*Owns:\*\*[ \t]*\S/m.test(text)) out.push(`${file}: no "**Owns:** ..." line saying what the stage owns`);
    const may = mayImportOf(text);
    if ('problem' in may) {
      out.push(`${file}: ${may.problem}`);
    } else if (may.imports.join(', ') !== imports.join(', ')) {
      const say = (xs: readonly string[]): string => (xs.length === 0 ? 'nothing' : xs.join(', '));
      out.push(`${file}: **May import:** says ${say(may.imports)}; daemon/layers.ts says ${say(imports)}`);
    }
  }
  return out;
}

/** Stages whose README the top README's layout table does not link. */
export function layoutProblems(topReadme: string, stages: Readonly<Record<string, Stage>>): string[] {
  return Object.keys(stages).filter((s) => s !== 'main' && !topReadme.includes(`](${stageDir(s)}/README.md)`))
    .map((s) => `README.md: the layout table has no row linking ${stageDir(s)}/README.md`);
}

t.test('the May-import reader', async (t) => {
  t.same(mayImportOf('# x\n\n**May import:** `base`, `feedback`\n'), { imports: ['base', 'feedback'] });
  t.same(mayImportOf('**May import:** nothing\n'), { imports: [] });
  t.same(mayImportOf('**May import:** `adapters/sources`\n'), { imports: ['adapters/sources'] });
  t.match(mayImportOf('**May import:** base, feedback\n'), { problem: /not `nothing` or a list/ });
  t.match(mayImportOf('**May import:**\n'), { problem: /not `nothing` or a list/ });
  t.match(mayImportOf('no such line\n'), { problem: 'has 0 "**May import:**" lines, wants one' });
  t.match(mayImportOf('**May import:** nothing\n**May import:** `base`\n'), { problem: 'has 2 "**May import:**" lines, wants one' });
});

t.test('every stage of daemon/layers.ts has a README whose May-import line is the table\'s', async (t) => {
  t.same(readmeProblems(repoRoot, STAGES), []);
});

t.test('a missing README, a list that differs, an empty Owns line, a changed table: each is named', async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), 'alignd-readmes-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  for (const stage of Object.keys(STAGES)) {
    if (stage === 'main' || !existsSync(join(repoRoot, stageDir(stage), 'README.md'))) continue;
    cpSync(join(repoRoot, stageDir(stage), 'README.md'), join(tmp, stageDir(stage), 'README.md'));
  }
  t.same(readmeProblems(tmp, STAGES), [], 'the copy passes as the tree does');

  rmSync(join(tmp, 'daemon/gate/README.md'));
  const edit = (file: string, from: RegExp, to: string): void => {
    const text = readFileSync(join(tmp, file), 'utf8');
    t.match(text, from, `${file} has what the case edits`);
    writeFileSync(join(tmp, file), text.replace(from, to));
  };
  edit('daemon/store/README.md', /^\*\*May import:\*\*.*$/m, '**May import:** `feedback`, `base`');
  edit('adapters/publishers/README.md', /^\*\*May import:\*\*.*$/m, '**May import:** `base`');
  edit('daemon/base/README.md', /^\*\*Owns:\*\*.*$/m, '**Owns:**');
  t.same(readmeProblems(tmp, STAGES), [
    'daemon/base/README.md: no "**Owns:** ..." line saying what the stage owns',
    'daemon/store/README.md: **May import:** says feedback, base; daemon/layers.ts says base, feedback',
    'daemon/gate/README.md: missing (every stage of daemon/layers.ts has one: title, **Owns:**, **May import:**, **Public surface:**)',
    'adapters/publishers/README.md: **May import:** says base; daemon/layers.ts says base, registry',
  ]);

  // The table changes and the READMEs do not: the tree's own READMEs fail against the new table.
  const changed = { ...STAGES, stats: { owns: 'x', imports: ['base', 'feedback'] }, nowhere: { owns: 'x', imports: ['base'] } };
  t.same(readmeProblems(repoRoot, changed), [
    'daemon/stats/README.md: **May import:** says base; daemon/layers.ts says base, feedback',
    'daemon/nowhere/README.md: missing (every stage of daemon/layers.ts has one: title, **Owns:**, **May import:**, **Public surface:**)',
  ]);
});

t.test('the top README\'s layout table links every stage README', async (t) => {
  const top = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  t.same(layoutProblems(top, STAGES), []);
  t.same(layoutProblems(top.replace('](daemon/canary/README.md)', ']()'), STAGES),
    ['README.md: the layout table has no row linking daemon/canary/README.md'], 'a row without its link is named');
});
