// The ONNX model programs (daemon/model/inference-programs.ts on the engine) against transformers + PEFT
// (fixtures from tools/parity/): logits, response log-probs and final hidden states within 1e-4
// with and without the adapter, for every architecture, with all sequences of an architecture in
// one right-padded batch; KV-cache greedy generation over left-padded prompts equals generate().
import t from 'tap';
import { join } from 'node:path';
import { toOnnx } from '../../daemon/engine/onnx.js';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { batchFeeds, loadModel, loraFeeds } from '../../daemon/model/model.js';
import { readPeftAdapter } from '../../daemon/model/peft.js';
import { buildProgram } from '../../daemon/model/inference-programs.js';
import { TEST_EP, cpuFallbacks, testRuntime, unexpectedFallbacks } from '../harness/ep.js';
import { ARCHS, PARITY, maxAbsDiff, readJson, readLogits, type SequenceRecord } from './fixtures.js';

const TOL = 1e-4;

for (const arch of ARCHS) {
  t.test(arch, async (t) => {
    const model = loadModel(join(PARITY, arch, 'model'), await testRuntime({ threads: 1 }));
    const adapter = readPeftAdapter(join(PARITY, arch, 'adapter'), model.spec);
    const { sequences } = readJson<{ sequences: SequenceRecord[] }>(arch, 'reference.json');
    const ref = readLogits(arch, 'reference.safetensors');
    const batch = packLogProbBatch(sequences.map((s) => ({ ids: s.ids, promptLength: s.prompt_length })), model.padId);
    const { batch: B, length: T } = batch;
    const V = model.spec.vocabSize;
    const H = model.spec.hiddenSize;

    for (const [label, ad] of [['base', null], ['LoRA', adapter]] as const) {
      const logits = await model.logits(batch, ad);
      const lp = await model.logprobs(batch, ad);
      const hidden = ad === null ? await model.hiddenStates(batch) : null;
      sequences.forEach((s, b) => {
        const n = s.ids.length;
        const want = ref.get(`seq${b}.${ad === null ? 'logits' : 'logits_lora'}`)!;
        const got = logits.subarray(b * T * V, b * T * V + n * V);
        t.ok(maxAbsDiff(got, want) < TOL, `${label} seq${b}: logits match (max diff ${maxAbsDiff(got, want).toExponential(2)})`);
        const tokens = Array.from(lp.tokenLogps.subarray(b * T + s.prompt_length - 1, b * T + n - 1));
        const wantTokens = ad === null ? s.logprobs : s.logprobs_lora;
        t.ok(maxAbsDiff(tokens, wantTokens) < TOL, `${label} seq${b}: per-token response log-probs match`);
        const wantSum = ad === null ? s.logprob_sum : s.logprob_sum_lora;
        t.ok(Math.abs(lp.seqLogps[b]! - wantSum) < TOL, `${label} seq${b}: summed log-prob ${lp.seqLogps[b]} vs ${wantSum}`);
        const masked = Array.from(lp.tokenLogps.subarray(b * T, (b + 1) * T)).filter((_, i) => i < s.prompt_length - 1 || i >= n - 1);
        t.ok(masked.every((x) => x === 0), `${label} seq${b}: prompt and pad positions contribute nothing`);
        if (hidden !== null) {
          const wantH = ref.get(`seq${b}.hidden`)!.subarray((n - 1) * H, n * H);
          t.ok(maxAbsDiff(hidden.subarray(b * H, (b + 1) * H), wantH) < TOL, `seq${b}: hidden state at the last token matches`);
        }
      });
      // KV-cache generation over all prompts at once (left-padded to the longest).
      const prompts = sequences.map((s) => s.ids.slice(0, s.prompt_length));
      const gen = await model.generate(prompts, { maxNewTokens: 6, stopIds: [2] }, ad);
      sequences.forEach((s, b) => t.same(gen[b], ad === null ? s.greedy : s.greedy_lora, `${label} seq${b}: cached greedy continuation equals generate()`));
    }
    t.equal(B, sequences.length);
    if (TEST_EP !== 'cpu') {
      const program = toOnnx(buildProgram('logprobs', model.weights, adapter.config));
      const onCpu = await cpuFallbacks(program, { ...batchFeeds(batch), ...loraFeeds(adapter) });
      t.same(unexpectedFallbacks(onCpu), [], `the log-prob program ran on ${TEST_EP} (float ops on the CPU provider: ${onCpu.join(', ')})`);
    }
  });
}
