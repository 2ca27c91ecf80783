// The tiny built-in model: same bytes every time (and the same bytes transformers read when the
// fixtures were made), loads through the normal loader, and its tokenizer and chat template
// render, encode and decode exactly as transformers did; logits and log-probs match.
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint } from '../../daemon/model/hf-checkpoint.js';
import { referenceLogits, referenceResponseLogProbs } from '../../daemon/model/reference-forward.js';
import { ensureTinyModel, tinyModelFiles, writeTinyModel } from '../../daemon/model/tiny.js';
import { createTokenizer, loadTokenizer, type ChatMessage } from '../../daemon/model/tokenizer.js';
import { parameterCount } from '../../daemon/model/weights.js';
import { maxAbsDiff, readJson, readLogits } from './fixtures.js';

interface TinyRecord {
  special: { bos: [string, number]; eos: [string, number]; pad: [string, number] };
  vocab_size: number;
  chats: Array<{ messages: ChatMessage[]; add_generation_prompt: boolean; text: string; ids: number[] }>;
  encodes: Array<{ text: string; ids: number[]; decoded: string }>;
  pair: { prompt: ChatMessage[]; response: string; ids: number[]; prompt_length: number; logprobs: number[]; logprob_sum: number };
}

const dir = mkdtempSync(join(tmpdir(), 'alignd-tiny-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeTinyModel(dir);
const ck = loadCheckpoint(dir);
const tok = ck.tokenizer!;
const rec = readJson<TinyRecord>('tiny-tokenizer.json');

t.test('deterministic: the same bytes as every earlier run, including the one transformers read', async (t) => {
  const a = tinyModelFiles();
  const b = tinyModelFiles();
  const hashes = readJson<Record<string, string>>('tiny-files.json');
  t.same([...a.keys()].sort(), Object.keys(hashes).sort());
  for (const [name, bytes] of a) {
    t.ok(Buffer.from(bytes).equals(Buffer.from(b.get(name)!)), `${name} same in one process`);
    t.equal(createHash('sha256').update(bytes).digest('hex'), hashes[name], `${name} same as recorded`);
    t.ok(readFileSync(join(dir, name)).equals(Buffer.from(bytes)), `${name} written as generated`);
  }
  t.notOk(Buffer.from(tinyModelFiles(1).get('model.safetensors')!).equals(Buffer.from(a.get('model.safetensors')!)), 'another seed, other weights');
});

t.test('loads through the checkpoint loader as a llama', async (t) => {
  t.match(ck.spec, { modelType: 'llama', vocabSize: 384, hiddenSize: 64, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, tieWordEmbeddings: true });
  t.ok(parameterCount(ck.spec) < 200_000, `${parameterCount(ck.spec)} parameters`);
  t.equal(ensureTinyModel(dir), dir, 'ensure keeps an existing copy');
});

t.test('special tokens as transformers sees them', async (t) => {
  t.same([tok.bosToken, tok.bosTokenId], rec.special.bos);
  t.same([tok.eosToken, tok.eosTokenId], rec.special.eos);
  t.same([tok.padToken, tok.padTokenId], rec.special.pad);
  t.equal(tok.vocabSize, rec.vocab_size);
});

t.test('chat template renders and tokenizes as apply_chat_template did', async (t) => {
  t.equal(rec.chats.length, 6);
  for (const c of rec.chats) {
    const text = tok.renderChat(c.messages, { addGenerationPrompt: c.add_generation_prompt });
    t.equal(text, c.text, `text (${c.messages.length} messages, generation prompt ${c.add_generation_prompt})`);
    t.same(tok.encode(text, { addSpecialTokens: false }), c.ids, 'ids');
    t.equal(tok.decode(c.ids), c.text, 'decodes back');
  }
});

t.test('plain text encodes and decodes as transformers did', async (t) => {
  for (const e of rec.encodes) {
    t.same(tok.encode(e.text, { addSpecialTokens: false }), e.ids, JSON.stringify(e.text));
    t.equal(tok.decode(e.ids), e.decoded);
  }
  t.equal(tok.decode([]), '');
  t.equal(tok.decode(tok.encode('<|im_start|>hi<|im_end|>'), { skipSpecialTokens: true }), 'hi');
});

t.test('prompt/response split and log-probs match transformers', async (t) => {
  const pr = tok.promptResponse(rec.pair.prompt, rec.pair.response);
  t.same(pr.ids, rec.pair.ids);
  t.equal(pr.promptLength, rec.pair.prompt_length);
  t.equal(pr.ids[pr.ids.length - 1], tok.eosTokenId, 'response closed with eos');
  t.same(tok.promptResponse(rec.pair.prompt, rec.pair.response, { appendEos: false }).ids, rec.pair.ids.slice(0, -1));
  t.same(tok.encodePrompt('How many days are there in a week?'), rec.pair.ids.slice(0, rec.pair.prompt_length), 'a string prompt is one user turn');
  const logits = referenceLogits(ck, pr.ids);
  t.ok(maxAbsDiff(logits, readLogits('tiny-reference.safetensors').get('logits')!) < 1e-4, 'logits');
  const lp = referenceResponseLogProbs(ck, pr.ids, pr.promptLength);
  t.ok(maxAbsDiff(lp.perToken, rec.pair.logprobs) < 1e-4, 'per-token log-probs');
  t.ok(Math.abs(lp.sum - rec.pair.logprob_sum) < 1e-4, `summed log-prob ${lp.sum}`);
});

t.test('a template error is a clear error', async (t) => {
  t.throws(() => tok.renderChat([{ role: 'user', content: 'x' }, 5 as unknown as ChatMessage]), /chat template refused the messages/);
});

interface TemplateRecord {
  multiline: { renders: Array<{ messages: ChatMessage[]; add_generation_prompt: boolean; text: string }>; refused: ChatMessage[]; refusal: string };
}

t.test('a multi-line template (block trimming, whitespace control) renders as transformers does', async (t) => {
  const rec = readJson<TemplateRecord>('chat-templates.json').multiline;
  const template = readFileSync(new URL('../../tools/parity/templates/multiline.jinja', import.meta.url), 'utf8');
  const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as unknown;
  const tc = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  const fromConfig = createTokenizer(tj, { ...tc, chat_template: template });
  // transformers 5 saves the template as chat_template.jinja beside tokenizer_config.json.
  const jdir = mkdtempSync(join(tmpdir(), 'alignd-jinja-'));
  t.teardown(() => rmSync(jdir, { recursive: true, force: true }));
  writeFileSync(join(jdir, 'tokenizer.json'), JSON.stringify(tj));
  writeFileSync(join(jdir, 'tokenizer_config.json'), JSON.stringify({ ...tc, chat_template: undefined }));
  writeFileSync(join(jdir, 'chat_template.jinja'), template);
  const fromFile = loadTokenizer(jdir);
  t.equal(rec.renders.length, 8);
  for (const r of rec.renders) {
    t.equal(fromConfig.renderChat(r.messages, { addGenerationPrompt: r.add_generation_prompt }), r.text, JSON.stringify(r.messages).slice(0, 60));
    t.equal(fromFile.renderChat(r.messages, { addGenerationPrompt: r.add_generation_prompt }), r.text, 'same from chat_template.jinja');
  }
  t.throws(() => fromConfig.renderChat(rec.refused), new RegExp(rec.refusal));
});
