/**
 * Converted weights (weight-files.ts) do not outlive their use: without a folder they sit in a
 * temporary folder of the process, removed by Model.close(), at a normal exit, and — when the
 * process was killed — by the next conversion; with a folder (the daemon's data dir) they are kept
 * under a content key and reused, and a changed checkpoint gets a new conversion. The tiny model's
 * F32 checkpoint with `storage: 'float16'` is the conversion. Needs `npm run build` (child processes
 * run dist/).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { prepackingFits } from '../../daemon/engine/sessions.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { loadModel } from '../../daemon/model/model.js';
import { packableBytes } from '../../daemon/model/weight-files.js';
import { ensureTinyModel } from '../../daemon/model/tiny.js';
import { repoRoot } from '../harness/daemon.js';

const root = mkdtempSync(join(tmpdir(), 'alignd-weight-files-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const ckpt = ensureTinyModel(join(root, 'tiny'));
const batch = packLogProbBatch([{ ids: [5, 9, 13, 17, 21, 25], promptLength: 2 }], 0);
const modelJs = pathToFileURL(join(repoRoot, 'dist/daemon/model/model.js')).href;

/** A node process that loads the tiny model with float16 storage, prints its weights folder, then exits or waits. */
function child(wait: boolean): Promise<{ dir: string; exited: Promise<number | null>; kill(): void }> {
  const code = `import { loadModel } from ${JSON.stringify(modelJs)};
const m = loadModel(${JSON.stringify(ckpt)}, { storage: 'float16', threads: 1 });
console.log(m.weights.dir);
${wait ? 'setInterval(() => {}, 1000);' : ''}`;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((done) => proc.on('exit', (c) => done(c)));
  return new Promise((done, fail) => {
    let out = '';
    proc.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) done({ dir: out.trim(), exited, kill: () => proc.kill('SIGKILL') });
    });
    void exited.then((c) => { if (!out.includes('\n')) fail(new Error(`child exited ${c} before printing its weights folder`)); });
  });
}

t.test('a checkpoint read in place has no folder of its own to remove', async (t) => {
  const m = loadModel(ckpt, { threads: 1 });
  t.equal(m.weights.dir, dirname(join(ckpt, 'model.safetensors')), 'the checkpoint folder');
  m.close();
  t.ok(existsSync(join(ckpt, 'model.safetensors')), 'close() leaves the checkpoint alone');
});

t.test('without a folder: a temporary folder, removed by close(); no programs after it', async (t) => {
  const m = loadModel(ckpt, { storage: 'float16', threads: 1 });
  t.equal(dirname(m.weights.dir), tmpdir());
  t.match(basename(m.weights.dir), new RegExp(`^alignd-weights-${process.pid}-`));
  t.ok(existsSync(join(m.weights.dir, 'weights.bin')), 'the converted file');
  const lp = (await m.logprobs(batch)).seqLogps;
  t.ok(Number.isFinite(lp[0]), 'programs read it');
  m.close();
  t.notOk(existsSync(m.weights.dir), 'removed by close()');
  await t.rejects(m.logprobs(batch, null).then(() => m.hiddenStates(batch)), /closed/, 'a closed model builds no program');
});

t.test('without a folder: removed when the process exits', async (t) => {
  const c = await child(false);
  t.equal(await c.exited, 0);
  t.match(basename(c.dir), /^alignd-weights-\d+-/);
  t.notOk(existsSync(c.dir), 'the exit hook removed it');
});

t.test('a killed process\'s folder is removed by the next conversion', async (t) => {
  const c = await child(true);
  c.kill();
  await c.exited;
  t.ok(existsSync(c.dir), 'SIGKILL leaves the folder behind');
  const m = loadModel(ckpt, { storage: 'float16', threads: 1 });
  t.notOk(existsSync(c.dir), 'the next conversion removed it (its process is gone)');
  t.ok(existsSync(m.weights.dir), 'and kept its own');
  m.close();
});

t.test('with a folder: kept under a content key, reused, and a changed checkpoint converts again', async (t) => {
  const programDir = join(root, 'weights');
  const a = loadModel(ckpt, { storage: 'float16', threads: 1, programDir });
  t.equal(dirname(a.weights.dir), programDir);
  const file = join(a.weights.dir, 'weights.bin');
  const first = statSync(file);
  const lpA = (await a.logprobs(batch)).seqLogps;
  a.close();
  t.ok(existsSync(file), 'close() keeps the data dir\'s conversion');

  const b = loadModel(ckpt, { storage: 'float16', threads: 1, programDir });
  t.equal(b.weights.dir, a.weights.dir, 'same key');
  const again = statSync(file);
  t.equal(again.ino, first.ino, 'the same file: not converted again');
  t.equal(again.mtimeMs, first.mtimeMs);
  t.same((await b.logprobs(batch)).seqLogps, lpA, 'same log-probs');

  const src = join(ckpt, 'model.safetensors');
  const later = new Date(statSync(src).mtimeMs + 5000);
  utimesSync(src, later, later);
  const c = loadModel(ckpt, { storage: 'float16', threads: 1, programDir });
  t.not(c.weights.dir, a.weights.dir, 'a changed checkpoint file gets a new key');
  t.equal(readdirSync(programDir).length, 2);
  const f32 = loadModel(ckpt, { threads: 1, programDir });
  t.equal(f32.weights.dir, dirname(src), 'no conversion needed: read in place, nothing written');
  t.equal(readdirSync(programDir).length, 2);
});

t.test('prepacking is chosen per model from the float32 matrices its sessions would copy', async (t) => {
  const f32 = loadModel(ckpt, { threads: 1 });
  t.ok(packableBytes(f32.weights) > 0, `the tiny F32 checkpoint has ${packableBytes(f32.weights)} packable bytes`);
  t.equal(f32.runtime.prepacking, prepackingFits(packableBytes(f32.weights)), 'the engine\'s choice');
  t.equal(f32.runtime.prepacking, true, 'a tiny model: on');
  f32.close();
  const half = loadModel(ckpt, { storage: 'float16', threads: 1 });
  t.equal(packableBytes(half.weights), 0, 'float16 storage: nothing a session could pack');
  half.close();
  const forced = loadModel(ckpt, { threads: 1, prepacking: false });
  t.equal(forced.runtime.prepacking, false, 'an explicit option wins');
  forced.close();
});
