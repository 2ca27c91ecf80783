/**
 * Memory-saving forms of the log-prob program (issue 12) give the same numbers as the plain one on
 * the tiny model: the head over vocabulary blocks (no [B, T, V] tensor) and activation
 * recomputation (each decoder layer and head block recomputed in the backward pass) — same
 * log-probs, same LoRA gradients, and a train step with either gives the same loss.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { createSession, grad, numbers, ops as O, output, run, toOnnx } from '../../daemon/engine/index.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { declareLora } from '../../daemon/model/forward-graph.js';
import { initLora } from '../../daemon/model/lora.js';
import { batchFeeds, loadModel, loraFeeds } from '../../daemon/model/model.js';
import type { HeadOptions } from '../../daemon/model/head.js';
import { buildLogProbs, logProbInputs } from '../../daemon/model/inference-programs.js';
import { createRng } from '../../daemon/base/random.js';
import { ensureTinyModel } from '../../daemon/model/tiny.js';
import { maxAbsDiff } from './fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'alignd-recompute-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const model = loadModel(ensureTinyModel(dir), { threads: 1 });
const lora = { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'down_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
const adapter = initLora(model.spec, lora, 3);
const rng = createRng(4);
for (const p of adapter.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.2, 0.2);
const V = model.spec.vocabSize;
const batch = packLogProbBatch(Array.from({ length: 3 }, (_, i) => ({
  ids: Array.from({ length: 9 + 4 * i }, () => Math.floor(rng.next() * V)), promptLength: 3 + i,
})), model.padId);

/** Sequence log-probs and d(Σ log-probs)/d(every LoRA tensor) of a program built with `opts`. */
async function logpsAndGrads(opts: HeadOptions): Promise<{ seq: number[]; grads: number[][]; nodes: number; segments: number }> {
  const { g, base } = model.trainGraph('recompute_check');
  const lv = declareLora(g, model.spec, lora, 'input');
  const lp = buildLogProbs(base, lv, logProbInputs(g), opts);
  output(lp.seqLogps, 'seq');
  const params = [...lv.pairs.values()].flatMap((p) => [p.a, p.b]);
  grad(O.sumAll(lp.seqLogps), params).forEach((d, i) => output(d, `d${i}`));
  const s = await createSession(toOnnx(g), { threads: 1 });
  const out = await run(s, { ...batchFeeds(batch), ...loraFeeds(adapter) });
  return { seq: numbers(out['seq']!), grads: params.map((_, i) => numbers(out[`d${i}`]!)), nodes: g.nodes.length, segments: g.segments.length };
}

const plain = await logpsAndGrads({});

t.test('the head over vocabulary blocks: same log-probs and gradients as the full log-softmax', async (t) => {
  const blocks = await logpsAndGrads({ blockRows: 100 });
  t.ok(maxAbsDiff(blocks.seq, plain.seq) < 1e-4, `log-probs (max diff ${maxAbsDiff(blocks.seq, plain.seq).toExponential(2)})`);
  const worst = Math.max(...blocks.grads.map((d, i) => maxAbsDiff(d, plain.grads[i]!)));
  t.ok(worst < 1e-4, `LoRA gradients (max diff ${worst.toExponential(2)})`);
});

t.test('recomputed layers and head blocks: same log-probs and gradients, the forward values not kept', async (t) => {
  const re = await logpsAndGrads({ recompute: true, blockRows: 100 });
  t.equal(re.segments, model.spec.numLayers + Math.ceil(V / 100), 'one segment per decoder layer and per head block');
  t.ok(maxAbsDiff(re.seq, plain.seq) < 1e-4, `log-probs (max diff ${maxAbsDiff(re.seq, plain.seq).toExponential(2)})`);
  const worst = Math.max(...re.grads.map((d, i) => maxAbsDiff(d, plain.grads[i]!)));
  t.ok(worst < 1e-4, `LoRA gradients (max diff ${worst.toExponential(2)})`);
  t.ok(re.nodes > plain.nodes, `the backward pass carries the recomputed forward (${re.nodes} nodes vs ${plain.nodes})`);
});

t.test('a recomputed graph\'s backward reads no forward value from inside a segment', async (t) => {
  const { g, base } = model.trainGraph('recompute_reads');
  const lv = declareLora(g, model.spec, lora, 'param');
  const lp = buildLogProbs(base, lv, logProbInputs(g), { recompute: true });
  const firstBackward = g.nodes.length;
  grad(O.sumAll(lp.seqLogps), [...lv.pairs.values()].flatMap((p) => [p.a, p.b]));
  const inside = new Set<string>();
  for (const s of g.segments) for (let k = s.first; k < s.end; k++) if (g.nodes[k]!.op !== 'RandomUniformLike') for (const o of g.nodes[k]!.outputs) inside.add(o);
  const outputs = new Set<string>();
  for (const s of g.segments) outputs.add(g.nodes[s.end - 1]!.outputs[0]!); // a segment's result feeds the next one's forward
  const read = g.nodes.slice(firstBackward).flatMap((n) => n.inputs).filter((i) => inside.has(i) && !outputs.has(i));
  t.same([...new Set(read)].slice(0, 5), [], 'backward nodes read recomputed copies only');
});
