// The TypeScript reference forward against transformers + PEFT (fixtures from tools/parity/):
// logits and response log-probs within 1e-4, with and without a LoRA adapter, for every
// supported architecture; adapters that alignd wrote load in PEFT and give the same logits.
import t from 'tap';
import { join } from 'node:path';
import { loadCheckpoint } from '../../daemon/model/hf-checkpoint.js';
import { readPeftAdapter } from '../../daemon/model/peft.js';
import { referenceGreedy, referenceHidden, referenceLogits, referenceResponseLogProbs } from '../../daemon/model/reference-forward.js';
import { ARCHS, PARITY, maxAbsDiff, readJson, readLogits, type SequenceRecord } from './fixtures.js';

const TOL = 1e-4;

interface PeftReport {
  archs: Record<string, { loaded_in_peft: boolean; unexpected_keys: string[]; missing_lora_keys: string[] }>;
}

for (const arch of ARCHS) {
  t.test(arch, async (t) => {
    const ck = loadCheckpoint(join(PARITY, arch, 'model'));
    const adapter = readPeftAdapter(join(PARITY, arch, 'adapter'), ck.spec);
    const aligndAdapter = readPeftAdapter(join(PARITY, arch, 'alignd-adapter'), ck.spec);
    const ref = readJson<{ sequences: SequenceRecord[] }>(arch, 'reference.json');
    const logits = readLogits(arch, 'reference.safetensors');
    const aligndLogits = readLogits(arch, 'alignd-reference.safetensors');
    ref.sequences.forEach((s, i) => {
      const base = referenceLogits(ck, s.ids);
      const withLora = referenceLogits(ck, s.ids, adapter);
      t.ok(maxAbsDiff(base, logits.get(`seq${i}.logits`)!) < TOL, `seq${i} base logits match transformers (max diff ${maxAbsDiff(base, logits.get(`seq${i}.logits`)!).toExponential(2)})`);
      t.ok(maxAbsDiff(withLora, logits.get(`seq${i}.logits_lora`)!) < TOL, `seq${i} LoRA logits match PEFT (max diff ${maxAbsDiff(withLora, logits.get(`seq${i}.logits_lora`)!).toExponential(2)})`);
      // The adapter must matter, or the comparison above proves nothing about LoRA.
      t.ok(maxAbsDiff(base, withLora) > 100 * TOL, `seq${i} adapter changes the logits`);
      const lp = referenceResponseLogProbs(ck, s.ids, s.prompt_length);
      const lpLora = referenceResponseLogProbs(ck, s.ids, s.prompt_length, adapter);
      t.ok(maxAbsDiff(lp.perToken, s.logprobs) < TOL, `seq${i} per-token log-probs match`);
      t.ok(Math.abs(lp.sum - s.logprob_sum) < TOL, `seq${i} summed log-prob matches (${lp.sum} vs ${s.logprob_sum})`);
      t.ok(maxAbsDiff(lpLora.perToken, s.logprobs_lora) < TOL, `seq${i} per-token log-probs with LoRA match`);
      t.ok(Math.abs(lpLora.sum - s.logprob_sum_lora) < TOL, `seq${i} summed log-prob with LoRA matches`);
      const hidden = referenceHidden(ck, s.ids);
      t.ok(maxAbsDiff(hidden, logits.get(`seq${i}.hidden`)!) < TOL, `seq${i} final hidden states match`);
      const prompt = s.ids.slice(0, s.prompt_length);
      t.same(referenceGreedy(ck, prompt, 6, [2]), s.greedy, `seq${i} greedy continuation matches generate()`);
      t.same(referenceGreedy(ck, prompt, 6, [2], adapter), s.greedy_lora, `seq${i} greedy continuation with LoRA matches`);
      const mine = referenceLogits(ck, s.ids, aligndAdapter);
      t.ok(maxAbsDiff(mine, aligndLogits.get(`seq${i}.logits_alignd`)!) < TOL, `seq${i} alignd-written adapter gives PEFT's logits`);
    });
  });
}

t.test('alignd-written adapters load in PEFT with no missing or unexpected keys', async (t) => {
  const report = readJson<PeftReport>('alignd-adapters-in-peft.json');
  t.same(Object.keys(report.archs).sort(), [...ARCHS].sort());
  for (const [arch, r] of Object.entries(report.archs)) {
    t.equal(r.loaded_in_peft, true, `${arch} loaded`);
    t.same(r.unexpected_keys, [], `${arch}: no unexpected keys`);
    t.same(r.missing_lora_keys, [], `${arch}: no missing LoRA keys`);
  }
});
