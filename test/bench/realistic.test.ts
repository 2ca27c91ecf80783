/**
 * bench:align's realistic line on the tiny model (bench/realistic.ts): it trains, counts padding as
 * the packed batches hold it, and exports exactly the pairs and reference log-probs it used, which
 * tools/dpo-baseline reads.
 */
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyModel } from '../../daemon/model/tiny.js';
import { packedTokens, realistic } from '../../bench/realistic.js';
import { packSequences } from '../../daemon/model/packing.js';
import { chatWorkload, paddingOf, workloadPairs, workloadRows } from '../../bench/workload.js';

t.test('the realistic line on the tiny model, and its export', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'alignd-realistic-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  // The tiny model has 256 positions: the same shape, scaled down.
  const workload = (v: number) => ({ ...chatWorkload(v), prompt: { median: 60, sigma: 0.8, min: 4, max: 160 }, response: { median: 12, sigma: 0.9, min: 2, max: 60 }, systemPromptLength: 16 });
  const line = await realistic(out, { provider: 'cpu', threads: 1, iters: 1, pairs: 4, microPairs: 2, seed: 5, profile: true, writeModel: writeTinyModel, workload, name: 'tiny' });
  const pairs = workloadPairs(4, 5, workload(384));
  const { chosen, rejected } = workloadRows(pairs);
  const micro = [0, 2].map((i) => [chosen[i]!, chosen[i + 1]!, rejected[i]!, rejected[i + 1]!]);
  const padded = micro.map((rows) => paddingOf(rows));
  const packed = packedTokens(micro.map((rows) => packSequences(rows, 0, { pack: true, sharePrompts: true })));
  t.equal(line['real_tokens'], padded[0]!.real + padded[1]!.real, 'real tokens: the sequences\' own');
  t.equal(line['padding_tokens'], packed.padding, 'padding as the packed batches hold it');
  t.equal(line['processed_tokens'], packed.processed);
  t.ok(packed.padding <= padded[0]!.padding + padded[1]!.padding, 'no more padding than right-padded batches');
  t.ok(packed.processed < packed.real, 'fewer tokens processed than the sequences hold: each pair\'s prompt runs once');
  for (const k of ['step_ms', 'forward_ms', 'tokens_per_s', 'gen_tokens_per_s', 'peak_rss_mb', 'profile_kernel_ms']) t.ok(Number(line[k]) > 0, `${k} > 0`);
  t.match(String(line['profile_top_ops']), /MatMul|Gemm/, 'the profile names the matrix products');
  for (const k of ['forward_composite_ms', 'fused_forward_speedup', 'gen_composite_tokens_per_s', 'fused_gen_speedup', 'profile_forward_kernel_ms']) t.ok(Number(line[k]) > 0, `${k} > 0`);
  t.match(String(line['profile_forward_top_ops']), /GroupQueryAttention/, 'the forward program runs the fused attention kernel');
  t.notMatch(String(line['profile_top_ops']), /Attention|SimplifiedLayerNormalization/, 'the train step keeps the composite kernels');
  const w = JSON.parse(readFileSync(join(out, 'workload.json'), 'utf8')) as { realistic: { pairs: unknown[]; micro_pairs: number; ref_logps: number[][] } };
  t.same(w.realistic.pairs, pairs.map((p) => ({ prompt: p.prompt, chosen: p.chosen, rejected: p.rejected })), 'the exported pairs are the measured ones');
  t.equal(w.realistic.micro_pairs, 2);
  t.ok(w.realistic.ref_logps.length === 4 && w.realistic.ref_logps.flat().every((x) => Number.isFinite(x) && x < 0), 'reference log-probs per pair');
  t.ok(JSON.parse(readFileSync(join(out, 'model', 'config.json'), 'utf8')).vocab_size === 384, 'the checkpoint is beside it');
});
