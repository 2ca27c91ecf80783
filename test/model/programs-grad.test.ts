// LoRA gradients of summed response log-probs against float64 central finite differences on the
// parity checkpoints whose forward differs most from the tiny Llama: GPT-2 (LayerNorm, gelu_new,
// Conv1D layout, fused c_attn split, learned positions, LoRA on every module) and Mistral
// (sliding window shorter than the sequence, grouped-query attention, untied head), plus Qwen2's
// q/k/v biases. The fixtures' PEFT adapters give the (non-zero) point of evaluation.
import t from 'tap';
import { join } from 'node:path';
import { packLogProbBatch } from '../../daemon/model/batch.js';
import { loadModel } from '../../daemon/model/model.js';
import { readPeftAdapter } from '../../daemon/model/peft.js';
import { gradcheck, onDevice } from '../engine/gradcheck.js';
import { PARITY, loraLogProbGradCase, readJson, type SequenceRecord } from './fixtures.js';

for (const arch of ['gpt2', 'mistral', 'qwen2'] as const) {
  t.test(arch, async (t) => {
    const model = loadModel(join(PARITY, arch, 'model'), { threads: 1 });
    const adapter = readPeftAdapter(join(PARITY, arch, 'adapter'), model.spec);
    const { sequences } = readJson<{ sequences: SequenceRecord[] }>(arch, 'reference.json');
    // Two rows of different lengths; the longer one (16 tokens) is longer than Mistral's window of 6.
    const batch = packLogProbBatch([sequences[1]!, sequences[2]!].map((s) => ({ ids: s.ids, promptLength: s.prompt_length })), model.padId);
    const r = await gradcheck(loraLogProbGradCase(`${arch} LoRA`, model, adapter, batch));
    t.ok(r.fdNorm > 1e-2, `gradient is not trivially zero (‖fd‖ = ${r.fdNorm.toExponential(2)})`);
    // 5e-6: central differences with ε = 1e-5 carry an O(ε²·f''') truncation error, which these
    // adapters' large gradients (‖fd‖ up to ~5e2 on qwen2) bring to ~1e-6; a wrong rule gives ≫ 1e-3.
    // 1e-4 for float32 gradients (WebGPU) against the float64 differences: float32 rounding through
    // the layers gives up to 1.5e-5 (qwen2), on the CPU provider as on lavapipe.
    const tol = r.dtype === 'float64' ? 5e-6 : 1e-4;
    t.ok(r.relError < tol, `relative error ${r.relError.toExponential(2)} over ${r.elements} LoRA elements (${adapter.pairs.size} modules, ${r.dtype})`);
    onDevice(t, r);
  });
}
