// Sampling (temperature, top-p as transformers' warpers, seeded) and log-prob batch packing
// (right padding, response-only targets, truncation), checked on the tiny model.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { loadCheckpoint } from '../../daemon/model/hf-checkpoint.js';
import { referenceBatchLogProbs, referenceGenerate, referenceGreedy, referenceResponseLogProbs } from '../../daemon/model/reference-forward.js';
import { createRng } from '../../daemon/base/random.js';
import { sampleToken, samplingDistribution } from '../../daemon/model/sampling.js';
import { writeTinyModel } from '../../daemon/model/tiny.js';
import { readJson } from './fixtures.js';

const probs = [0.5, 0.3, 0.15, 0.05];
const logits = probs.map(Math.log);
const close = (a: ArrayLike<number>, b: number[], tol = 1e-12): boolean => b.every((v, i) => Math.abs(a[i]! - v) < tol);

t.test('top-p keeps the most likely tokens until their mass reaches p (the crossing token included)', async (t) => {
  t.ok(close(samplingDistribution(logits, { temperature: 1, topP: 1 }), probs), 'top_p 1 keeps all');
  t.ok(close(samplingDistribution(logits, { temperature: 1, topP: 0.7 }), [0.5 / 0.8, 0.3 / 0.8, 0, 0]), '0.7 → two tokens');
  t.ok(close(samplingDistribution(logits, { temperature: 1, topP: 0.5 }), [1, 0, 0, 0]), '0.5 reached by the first token alone');
  t.ok(close(samplingDistribution(logits, { temperature: 1, topP: 0.51 }), [0.625, 0.375, 0, 0]), 'just above → crossing token kept');
  t.ok(close(samplingDistribution(logits, { temperature: 1, topP: 1e-9 }), [1, 0, 0, 0]), 'at least one token');
  const warm = samplingDistribution(logits, { temperature: 2, topP: 1 });
  const z = probs.reduce((s, p) => s + Math.sqrt(p), 0);
  t.ok(close(warm, probs.map((p) => Math.sqrt(p) / z)), 'temperature 2 takes the square root of probabilities');
  t.throws(() => samplingDistribution(logits, { temperature: 1, topP: 0 }), /top_p must be in \(0, 1\]/);
  t.throws(() => sampleToken(logits, { temperature: -1, topP: 1 }, createRng(1)), /temperature must be ≥ 0/);
});

t.test('sampling frequencies follow the distribution; greedy ignores the RNG', async (t) => {
  const rng = createRng(123);
  const counts = [0, 0, 0, 0];
  const n = 20000;
  for (let i = 0; i < n; i++) counts[sampleToken(logits, { temperature: 1, topP: 1 }, rng)]!++;
  counts.forEach((c, i) => t.ok(Math.abs(c / n - probs[i]!) < 0.015, `token ${i}: ${c / n} ≈ ${probs[i]}`));
  t.equal(sampleToken(logits, { temperature: 0, topP: 1 }, createRng(5)), 0);
  t.equal(sampleToken([1, 3, 3, 2], { temperature: 0, topP: 0.5 }, createRng(5)), 1, 'first index on ties');
});

const dir = mkdtempSync(join(tmpdir(), 'alignd-gen-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
writeTinyModel(dir);
const ck = loadCheckpoint(dir);
const tok = ck.tokenizer!;

t.test('generation is reproducible for a seed and greedy by default', async (t) => {
  const prompt = tok.encodePrompt('Write a haiku about the sea.');
  const sampling = { temperature: 1, topP: 0.95 };
  const a = referenceGenerate(ck, prompt, { maxNewTokens: 8, sampling, seed: 11 });
  t.same(referenceGenerate(ck, prompt, { maxNewTokens: 8, sampling, seed: 11 }), a, 'same seed, same tokens');
  t.notSame(referenceGenerate(ck, prompt, { maxNewTokens: 8, sampling, seed: 12 }), a, 'another seed, other tokens');
  t.equal(a.length, 8);
  const g = referenceGreedy(ck, prompt, 5);
  t.same(referenceGenerate(ck, prompt, { maxNewTokens: 5, sampling: { temperature: 1, topP: 1e-9 }, seed: 3 }), g, 'a vanishing nucleus is greedy');
  const stop = g[1]!;
  t.same(referenceGreedy(ck, prompt, 5, [stop]), g.slice(0, g.indexOf(stop) + 1), 'stops after a stop token');
});

t.test('a padded batch gives each sequence the log-probs it has alone', async (t) => {
  const seqs = [
    tok.promptResponse('How many days are there in a week?', 'Seven.'),
    tok.promptResponse([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Capital of France?' }], 'Paris is the capital of France.'),
    tok.promptResponse('Hi', 'Hello! How can I help you today with the report?'),
  ];
  const batch = packLogProbBatch(seqs, tok.padTokenId!);
  t.equal(batch.batch, 3);
  t.equal(batch.length, Math.max(...seqs.map((s) => s.ids.length)));
  const T = batch.length;
  seqs.forEach((s, b) => {
    const mask = Array.from(batch.targetMask.subarray(b * T, (b + 1) * T));
    t.equal(mask.reduce((x, y) => x + y, 0), s.ids.length - s.promptLength, `row ${b}: one target per response token`);
    t.equal(mask.indexOf(1), s.promptLength - 1, `row ${b}: first target predicts the first response token`);
    t.equal(Array.from(batch.attentionMask.subarray(b * T, (b + 1) * T)).reduce((x, y) => x + y, 0), s.ids.length, `row ${b}: attention on real tokens`);
    t.ok(Array.from(batch.inputIds.subarray(b * T + s.ids.length, (b + 1) * T)).every((id) => id === tok.padTokenId), `row ${b}: right-padded`);
  });
  const { sums } = referenceBatchLogProbs(ck, batch);
  seqs.forEach((s, b) => {
    const alone = referenceResponseLogProbs(ck, s.ids, s.promptLength).sum;
    t.ok(Math.abs(sums[b]! - alone) < 1e-9, `row ${b}: ${sums[b]} = ${alone}`);
  });
});

t.test('over-long sequences lose prompt from the left first, then response from the right', async (t) => {
  const s = { ids: [1, 2, 3, 4, 5, 6, 7, 8], promptLength: 5 };
  const b1 = packLogProbBatch([s], 0, 6);
  t.same(Array.from(b1.inputIds), [3, 4, 5, 6, 7, 8]);
  t.same(b1.truncatedPrompt, [2]);
  t.same(b1.truncatedResponse, [0]);
  const b2 = packLogProbBatch([s], 0, 3);
  t.same(Array.from(b2.inputIds), [5, 6, 7], 'one prompt token kept');
  t.same([b2.truncatedPrompt[0], b2.truncatedResponse[0]], [4, 1]);
  t.same(Array.from(b2.targetMask), [1, 1, 0]);
  t.throws(() => packLogProbBatch([{ ids: [1, 2], promptLength: 2 }], 0), /at least one prompt and one response token/);
});

t.test('temperature and top-p give the distribution transformers\' warpers give', async (t) => {
  const cases = readJson<Array<{ temperature: number; top_p: number; logits: number[]; probs: number[] }>>('sampling.json');
  t.equal(cases.length, 5);
  for (const c of cases) {
    const p = samplingDistribution(c.logits, { temperature: c.temperature, topP: c.top_p });
    t.ok(close(p, c.probs, 1e-9), `T=${c.temperature} top_p=${c.top_p}: kept ${c.probs.filter((x) => x > 0).length} of ${c.probs.length}`);
    t.same(Array.from(p).map((x) => x > 0), c.probs.map((x) => x > 0), 'same nucleus');
  }
});
