// Behaviours of transformers 5.24 / PEFT 0.21 / TRL 1.16 that alignd must match or refuse
// (issue 14), against the committed run of tools/parity/make_fixtures.py's `semantics` phase:
// aLoRA refused by name; final hidden states of a left-padded batch; clean_up_tokenization_spaces
// and the empty string on a BPE tokenizer; TRL's DPO loss semantics (label_smoothing with sigmoid,
// robust, RPO's token-level NLL, IPO). Plus a pad id outside the vocabulary refused at load.
import t from 'tap';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCheckpoint } from '../../daemon/model/hf-checkpoint.js';
import { loadModel } from '../../daemon/model/model.js';
import { readPeftAdapter } from '../../daemon/model/peft.js';
import { loadTokenizer } from '../../daemon/model/tokenizer.js';
import { createSession, f64, graph, input, numbers, output, run, toOnnx } from '../../daemon/engine/index.js';
import { type DpoLossType, dpoLosses, nllTerm } from '../../daemon/align/losses.js';
import { ops as O } from '../../daemon/engine/index.js';
import { PARITY, maxAbsDiff, readJson, readLogits } from './fixtures.js';

interface TrlCase {
  config: { loss_type: string[]; label_smoothing?: number; loss_weights?: number[] };
  loss: number;
  chosen: number[]; rejected: number[]; ref_chosen: number[]; ref_rejected: number[];
  chosen_length: number[]; rejected_length: number[];
}
interface Semantics {
  versions: Record<string, string>;
  alora: { invocation_tokens: number[]; max_abs_dlogit_vs_lora_on_every_token: number; max_abs_dlogit_vs_base_before_invocation: number };
  left_padded: { model: string; input_ids: number[][]; attention_mask: number[][] };
  tokenizer_bos: { clean_up_tokenization_spaces: boolean; probes: Array<{ text: string; ids: number[]; ids_no_special: number[]; decoded: string; decoded_skip_special: string }> };
  trl_dpo: { beta: number; cases: Record<string, TrlCase> };
}
const sem = readJson<Semantics>('semantics', 'semantics.json');

t.test('an aLoRA adapter saved by PEFT is refused, naming alora_invocation_tokens', async (t) => {
  // Why refuse: PEFT leaves the tokens before the invocation at the base; LoRA everywhere differs.
  t.ok(sem.alora.max_abs_dlogit_vs_lora_on_every_token > 0.1, `PEFT's aLoRA differs from LoRA on every token by ${sem.alora.max_abs_dlogit_vs_lora_on_every_token}`);
  t.ok(sem.alora.max_abs_dlogit_vs_base_before_invocation < 1e-5, 'and equals the base before the invocation');
  const ck = loadCheckpoint(join(PARITY, 'llama', 'model'));
  t.throws(() => readPeftAdapter(join(PARITY, 'semantics', 'alora-adapter'), ck.spec), {
    code: 'ADAPTER_INVALID', message: /alora_invocation_tokens \(activated LoRA, \[9,23\]\).*every token/,
  });
});

t.test('hiddenStates of a left-padded batch: the last real token, as transformers', async (t) => {
  const model = loadModel(join(PARITY, sem.left_padded.model));
  const ids = sem.left_padded.input_ids;
  const B = ids.length;
  const T = ids[0]!.length;
  const batch = { batch: B, length: T, inputIds: Int32Array.from(ids.flat()), attentionMask: Float32Array.from(sem.left_padded.attention_mask.flat()) };
  const got = await model.hiddenStates(batch);
  const want = readLogits('semantics', 'left-padded.safetensors').get('last_hidden')!;
  t.ok(maxAbsDiff(got, want) < 1e-4, `max |Δ| ${maxAbsDiff(got, want).toExponential(2)}`);
  // The same rows right-padded give the same states (the position ids shift, RoPE does not care).
  const right = ids.map((r, b) => { const real = r.filter((_, i) => sem.left_padded.attention_mask[b]![i] === 1); return [...real, ...new Array<number>(T - real.length).fill(0)]; });
  const rightMask = ids.map((_, b) => { const n = sem.left_padded.attention_mask[b]!.filter((m) => m === 1).length; return [...new Array<number>(n).fill(1), ...new Array<number>(T - n).fill(0)]; });
  const gotRight = await model.hiddenStates({ batch: B, length: T, inputIds: Int32Array.from(right.flat()), attentionMask: Float32Array.from(rightMask.flat()) });
  t.ok(maxAbsDiff(gotRight, want) < 1e-4, 'right padding agrees');
});

t.test('a BPE tokenizer with clean_up_tokenization_spaces: true decodes and encodes as transformers 5', async (t) => {
  t.equal(sem.tokenizer_bos.clean_up_tokenization_spaces, true, 'the flag is set in the fixture');
  const tok = loadTokenizer(join(PARITY, 'semantics', 'tokenizer-bos'));
  for (const p of sem.tokenizer_bos.probes) {
    t.same(tok.encode(p.text), p.ids, `encode ${JSON.stringify(p.text)} → ${JSON.stringify(p.ids)}`);
    t.same(tok.encode(p.text, { addSpecialTokens: false }), p.ids_no_special, `encode without special tokens ${JSON.stringify(p.text)}`);
    t.equal(tok.decode(p.ids), p.decoded, `decode ${JSON.stringify(p.decoded)}`);
    t.equal(tok.decode(p.ids, { skipSpecialTokens: true }), p.decoded_skip_special, `decode skipping specials ${JSON.stringify(p.decoded_skip_special)}`);
  }
  t.same(tok.encode(''), [tok.bosTokenId], 'the empty string is [bos]');
});

t.test('a pad id outside the vocabulary is refused at load, naming the id and the fix', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-pad-'));
  cpSync(join(PARITY, 'gpt2', 'model'), dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, pad_token_id: cfg['vocab_size'] }));
  t.throws(() => loadModel(dir), { code: 'MODEL_INVALID', message: /pad id 64 \(config\.json pad_token_id\) is outside the model's vocabulary of 64 embeddings.*resize_token_embeddings/ });
});

t.test(`DPO losses match TRL ${sem.versions['trl']} on recorded log-probs`, async (t) => {
  const beta = sem.trl_dpo.beta;
  for (const [name, c] of Object.entries(sem.trl_dpo.cases)) {
    const P = c.chosen.length;
    const g = graph(`trl_${name}`);
    const v = (n: string) => input(g, n, 'float64', [P]);
    const inp = { chosen: v('chosen'), rejected: v('rejected'), refChosen: v('ref_chosen'), refRejected: v('ref_rejected'), chosenLength: v('chosen_length'), rejectedLength: v('rejected_length') };
    const [main, extra] = c.config.loss_type as [DpoLossType, string | undefined];
    // label_smoothing goes in as TRL's config has it: `robust` uses it, `sigmoid` must not.
    let loss = O.meanAll(dpoLosses(inp, { lossType: main, beta, labelSmoothing: c.config.label_smoothing ?? 0 }));
    if (extra === 'sft') loss = O.add(loss, nllTerm(inp.chosen, inp.chosenLength, c.config.loss_weights![1]!));
    output(loss, 'loss');
    const out = await run(await createSession(toOnnx(g).bytes), {
      chosen: f64([P], c.chosen), rejected: f64([P], c.rejected), ref_chosen: f64([P], c.ref_chosen), ref_rejected: f64([P], c.ref_rejected),
      chosen_length: f64([P], c.chosen_length), rejected_length: f64([P], c.rejected_length),
    });
    const got = numbers(out['loss']!)[0]!;
    t.ok(Math.abs(got - c.loss) < 1e-4 * Math.max(1, Math.abs(c.loss)), `${name}: alignd ${got} vs TRL ${c.loss}`);
  }
  t.equal(sem.trl_dpo.cases['sigmoid_label_smoothing_0.1']!.loss, sem.trl_dpo.cases['sigmoid']!.loss, 'TRL itself ignores label_smoothing for sigmoid');
});
