/** The realistic bench workload (bench/workload.ts): seeded, inside its ranges, shaped as documented. */
import t from 'tap';
import { createRng } from '../../daemon/base/random.js';
import { chatWorkload, drawLength, paddingOf, workloadPairs, workloadRows } from '../../bench/workload.js';

const params = chatWorkload(384);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

t.test('the same seed gives the same pairs; another seed other pairs', async (t) => {
  t.same(workloadPairs(20, 7, params), workloadPairs(20, 7, params));
  t.not(JSON.stringify(workloadPairs(20, 8, params)), JSON.stringify(workloadPairs(20, 7, params)));
});

t.test('lengths stay in range and have the documented shape', async (t) => {
  const pairs = workloadPairs(3000, 1, params);
  const prompts = pairs.map((p) => p.prompt.length);
  const responses = pairs.flatMap((p) => [p.chosen.length, p.rejected.length]);
  t.ok(prompts.every((n) => n >= 20 && n <= 2000), 'prompts in [20, 2000]');
  t.ok(responses.every((n) => n >= 10 && n <= 600), 'responses in [10, 600]');
  t.ok(pairs.every((p) => [...p.prompt, ...p.chosen, ...p.rejected].every((id) => Number.isInteger(id) && id >= 0 && id < 384)), 'ids in the vocabulary');
  // Truncation moves the medians below the log-normals' (1000, 130): the mass redrawn from above
  // 2000 (19%) and 600 (4.5%) shifts the median to the 0.40 and 0.48 quantiles, ≈ 823 and ≈ 124.
  t.ok(Math.abs(median(prompts) - 823) < 60, `prompt median ${median(prompts)} ≈ 823`);
  t.ok(Math.abs(median(responses) - 124) < 10, `response median ${median(responses)} ≈ 124`);
  t.ok(median(prompts) > 5 * median(responses), 'median prompt ≫ median response');
  t.ok(Math.max(...prompts) > 1900 && Math.min(...prompts) < 200, 'a long tail both ways');
});

t.test('most prompts open with the one shared system prompt; chosen and rejected share the prompt', async (t) => {
  const pairs = workloadPairs(2000, 3, params);
  const withSystem = pairs.filter((p) => p.system);
  const eligible = pairs.filter((p) => p.prompt.length >= params.systemPromptLength + 16).length;
  t.ok(Math.abs(withSystem.length / eligible - 0.8) < 0.04, `system share ${withSystem.length / eligible} ≈ 0.8 of eligible prompts`);
  const system = withSystem[0]!.prompt.slice(0, params.systemPromptLength);
  t.ok(withSystem.every((p) => p.prompt.slice(0, params.systemPromptLength).join() === system.join()), 'one system prompt');
  t.ok(pairs.filter((p) => !p.system).every((p) => p.prompt.slice(0, params.systemPromptLength).join() !== system.join()), 'the others do not open with it');
  const rows = workloadRows(pairs);
  t.ok(pairs.every((p, i) => rows.chosen[i]!.promptLength === p.prompt.length && rows.rejected[i]!.promptLength === p.prompt.length
    && rows.chosen[i]!.ids.slice(0, p.prompt.length).join() === rows.rejected[i]!.ids.slice(0, p.prompt.length).join()), 'rows share the prompt');
  t.same(rows.chosen[0]!.ids.slice(pairs[0]!.prompt.length), pairs[0]!.chosen);
});

t.test('padding counts the tokens a padded batch adds', async (t) => {
  t.same(paddingOf([{ ids: [1, 2, 3] }, { ids: [1] }, { ids: [1, 2] }]), { processed: 9, real: 6, padding: 3 });
});

t.test('a distribution with no mass in its range is refused, not looped on', async (t) => {
  t.throws(() => drawLength(createRng(1), { median: 10, sigma: 0.01, min: 1000, max: 2000 }), /almost no mass/);
  t.throws(() => drawLength(createRng(1), { median: 10, sigma: 1, min: 5, max: 2 }), /bad length distribution/);
});
