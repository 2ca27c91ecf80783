/**
 * The `exposure` kind: per-version counts of served responses reported by the serving side. It
 * validates through the same contract as user feedback (and its JSON Schema export, checked with
 * ajv as a producer in another language would), is stored, and trains nothing.
 */
import t from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { defaultLimits, feedbackJsonSchema } from '../../daemon/feedback/schema.js';
import { createValidator } from '../../daemon/feedback/validate.js';
import { openBuffer } from '../../daemon/store/buffer.js';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { makeEvent } from '../harness/events.js';

const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (a: Ajv2020) => void;
const exposure = { event_id: 'x-1', ts: '2026-11-02T10:00:00Z', model: 'tiny', model_version: 'v3', source: { tenant: 'acme' }, kind: 'exposure', count: 1200 };

t.test('an exposure validates; a count that is missing, zero or fractional, or a prompt, is refused with its path', async (t) => {
  const validate = createValidator(defaultLimits);
  const ok = validate(JSON.stringify(exposure));
  t.ok(ok.ok, 'valid exposure');
  t.match(ok.ok && ok.event, { kind: 'exposure', count: 1200, model_version: 'v3' });
  for (const [name, bad, path] of [
    ['no count', { ...exposure, count: undefined }, 'count'],
    ['zero count', { ...exposure, count: 0 }, 'count'],
    ['fractional count', { ...exposure, count: 2.5 }, 'count'],
    ['with a prompt', { ...exposure, prompt: 'hi' }, ''],
  ] as const) {
    const r = validate(JSON.stringify(bad));
    t.notOk(r.ok, `${name}: refused`);
    if (!r.ok) {
      t.equal(r.code, 'schema', `${name}: schema error`);
      t.equal(r.path, path, `${name}: path ${JSON.stringify(path)}`);
      if (name === 'with a prompt') t.match(r.reason, /prompt/, 'the reason names the unknown field');
    }
  }
});

t.test('the JSON Schema export accepts exposures and refuses the same bad ones (ajv, draft 2020-12)', async (t) => {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  const check = ajv.compile(feedbackJsonSchema() as object);
  t.ok(check(exposure), `valid: ${JSON.stringify(check.errors)}`);
  t.ok(check(makeEvent(7, { kind: 'exposure' })), 'the harness factory makes valid exposures');
  t.notOk(check({ ...exposure, count: 0 }), 'count 0 refused');
  t.notOk(check({ ...exposure, prompt: 'hi' }), 'a prompt refused');
  t.notOk(check({ ...exposure, count: undefined }), 'missing count refused');
  const kinds = (feedbackJsonSchema() as { oneOf: Array<{ properties: { kind: { const: string } } }> }).oneOf.map((s) => s.properties.kind.const);
  t.ok(kinds.includes('exposure'), 'exposure is one of the exported kinds');
});

t.test('exposures are stored and counted, derive no examples, and never become probe prompts', async (t) => {
  const buffer = openBuffer({ path: join(mkdtempSync(join(tmpdir(), 'alignd-exposure-')), 'b.sqlite'), heldoutFraction: 0 });
  t.teardown(() => buffer.close());
  const ingest = createIngest({ buffer, limits: defaultLimits });
  const out = ingest.ingestBatch([
    { bytes: Buffer.from(JSON.stringify(exposure)), origin: { source: 'cli' } },
    { bytes: Buffer.from(JSON.stringify({ ...makeEvent(1, { kind: 'binary' }), model: 'tiny' })), origin: { source: 'cli' } },
  ]);
  t.same(out.map((o) => o.status), ['stored', 'stored']);
  buffer.deriveAll();
  const c = buffer.counts();
  t.equal(c.byKind['exposure'], 1, 'one exposure stored');
  t.same(c.examples, { kto: 1 }, 'only the binary event derived an example');
  t.same(buffer.recentPrompts('tiny', 10), ['prompt 1'], 'the exposure has no prompt to offer the gate');
  t.equal(buffer.pending(), 0, 'nothing left to derive');
});
