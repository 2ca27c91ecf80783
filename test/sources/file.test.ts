import t from 'tap';
import { appendFileSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openBuffer } from '../../daemon/store/buffer.js';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { fileSource } from '../../adapters/sources/file.js';
import { silentLogger } from '../../daemon/base/log.js';
import { makeEvent } from '../harness/events.js';

const line = (x: unknown): string => (typeof x === 'string' ? x : JSON.stringify(x)) + '\n';

function setup(dir: string, file: string) {
  const buffer = openBuffer({ path: join(dir, 'buffer.sqlite'), heldoutFraction: 0 });
  const ingest = createIngest({ buffer, limits: defaultLimits });
  const src = fileSource({ path: file, pollMs: 1_000_000, log: silentLogger, checkpoint: (k) => buffer.checkpoint(k) });
  return { buffer, ingest, src };
}

t.test('tails a JSONL file with a checkpoint, across restarts, partial lines and rotation', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-file-'));
  const file = join(dir, 'feedback.jsonl');
  writeFileSync(file, line(makeEvent(1)) + line('{oops') + line(makeEvent(2)) + JSON.stringify(makeEvent(3)).slice(0, 20));

  let s = setup(dir, file);
  await s.src.start(s.ingest);
  t.equal(s.buffer.counts().events, 2, 'two complete valid lines; the partial third waits');
  const dl = s.buffer.db.prepare('SELECT code, origin FROM dead_letters').all() as Array<{ code: string; origin: string }>;
  t.same(dl.map((d) => [d.code, JSON.parse(d.origin).line]), [['not_json', 2]], 'bad line kept with its line number');

  appendFileSync(file, JSON.stringify(makeEvent(3)).slice(20) + '\n' + line(makeEvent(4)));
  t.equal(await s.src.pollOnce(), 2, 'the completed line and the next one');
  t.equal(s.buffer.counts().events, 4);
  await s.src.stop();
  s.buffer.close();

  // restart: nothing is read twice (the checkpoint moved with the events)
  s = setup(dir, file);
  appendFileSync(file, line(makeEvent(5)));
  await s.src.start(s.ingest);
  t.equal(s.src.stats.lines, 1, 'only the new line is read after a restart');
  t.equal(s.ingest.stats.duplicates, 0);
  t.equal(s.buffer.counts().events, 5);

  // rotation: a new file at the same path is read from its start
  renameSync(file, file + '.1');
  writeFileSync(file, line(makeEvent(6)) + line(makeEvent(1)));
  await s.src.pollOnce();
  t.equal(s.buffer.counts().events, 6, 'new file read from 0; the replayed event 1 is a duplicate');
  t.equal(s.ingest.stats.duplicates, 1);
  await s.src.stop();
  s.buffer.close();
});

t.test('a file that does not exist yet is waited for', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-file-'));
  const file = join(dir, 'later.jsonl');
  const s = setup(dir, file);
  await s.src.start(s.ingest);
  t.equal(s.src.stats.lines, 0);
  writeFileSync(file, line(makeEvent(7)));
  await s.src.pollOnce();
  t.equal(s.buffer.counts().events, 1);
  await s.src.stop();
  s.buffer.close();
});
