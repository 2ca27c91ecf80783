/**
 * The model programs alignment runs, built from forward.ts, and the host-side feeds for them:
 *   - logps:  Σ response log-probs per row under a given adapter (reference log-probs, evaluation);
 *   - dpo / kto train steps: policy log-probs → objective → gradients (+ AdamW, or accumulation);
 *   - kl:     exact per-token KL(π‖π_ref) over the full vocabulary, policy and reference adapters
 *             both inputs of one program, so the [B, T, V] distributions never leave the session;
 *   - logits: next-token logits for sampling; hidden: final hidden states (reward/safety heads).
 * Every program takes the adapter tensors as inputs, so one session serves every round.
 */
import {
  type Graph, type OrtTensor, type ProgramInfo, type Value, gradProgram, graph, i64, input, ops as O, output, toOnnx, trainProgram,
  createSession, type RuntimeOptions, type Session, f32, type AdamWConfig,
} from '../engine/index.js';
import type { Checkpoint } from '../model/checkpoint.js';
import type { LoraAdapter, LoraConfig } from '../model/lora.js';
import type { LogProbBatch } from '../model/batch.js';
import { forward, forwardInputs, loraFeeds, loraParams, positionFeeds, responseLogps } from './forward.js';
import { type DpoLossType, dpoObjective, ktoObjective, nllTerm } from './losses.js';
import * as ort from 'onnxruntime-node';

export interface Programs {
  ckpt: Checkpoint;
  lora: LoraConfig;
  runtime: RuntimeOptions;
}

function batchInputs(g: Graph): { targets: Value; mask: Value } {
  return { targets: input(g, 'targets', 'int64', ['batch', 'seq']), mask: input(g, 'target_mask', 'float32', ['batch', 'seq']) };
}

/** Feeds for a packed batch: ids, targets, mask and the position tables for its padded length. */
export function batchFeeds(ckpt: Checkpoint, b: LogProbBatch): Record<string, OrtTensor> {
  const pos = positionFeeds(ckpt.spec, b.length);
  const d = ckpt.spec.headDim;
  return {
    input_ids: i64([b.batch, b.length], b.inputIds),
    targets: i64([b.batch, b.length], b.targets),
    target_mask: f32([b.batch, b.length], b.targetMask),
    rope_cos: f32([b.length, d], pos.cos),
    rope_sin: f32([b.length, d], pos.sin),
    attn_bias: f32([pos.group * b.length, b.length], pos.bias),
  };
}

export function adapterFeeds(adapter: LoraAdapter, prefix = 'lora'): Record<string, OrtTensor> {
  const out: Record<string, OrtTensor> = {};
  for (const [k, t] of Object.entries(loraFeeds(adapter, prefix))) out[k] = new ort.Tensor('float32', t.data, t.dims);
  return out;
}

export async function logpsSession(p: Programs): Promise<Session> {
  const g = graph('align_logps');
  const inp = forwardInputs(g, p.ckpt.spec);
  const { targets, mask } = batchInputs(g);
  const lora = loraParams(g, p.ckpt.spec, p.lora, 'lora', false);
  const { logits } = forward(p.ckpt, inp, lora);
  const lp = responseLogps(logits, targets, mask);
  output(lp.sums, 'logps');
  output(O.reduceSum(mask, [1], false), 'lengths');
  return createSession(toOnnx(g).bytes, p.runtime);
}

/** Σ log-probs per row of `b` under `adapter`. */
export async function computeLogps(p: Programs, session: Session, adapter: LoraAdapter, b: LogProbBatch): Promise<Float64Array> {
  const out = await session.run({ ...batchFeeds(p.ckpt, b), ...adapterFeeds(adapter) }, ['logps']);
  return Float64Array.from(out['logps']!.data as Float32Array);
}

export interface DpoProgramOptions {
  lossType: DpoLossType;
  labelSmoothing: number;
  /** RPO's α on the chosen NLL; 0 = off. */
  rpoAlpha: number;
  optimizer: AdamWConfig;
  /** true: a gradProgram for micro-batch accumulation; false: one-step trainProgram. */
  accumulate: boolean;
}

/**
 * DPO train step over a packed batch of 2P rows: `chosen_index`/`rejected_index` [P] pick each
 * pair's rows; `ref_chosen`/`ref_rejected` [P] are the cached reference log-probs; `beta` scalar.
 */
export function dpoProgram(p: Programs, o: DpoProgramOptions): ProgramInfo {
  const g = graph('align_dpo');
  const inp = forwardInputs(g, p.ckpt.spec);
  const { targets, mask } = batchInputs(g);
  const lora = loraParams(g, p.ckpt.spec, p.lora);
  const { logits } = forward(p.ckpt, inp, lora);
  const lp = responseLogps(logits, targets, mask);
  const ci = input(g, 'chosen_index', 'int64', ['pairs']);
  const ri = input(g, 'rejected_index', 'int64', ['pairs']);
  const lengths = O.reduceSum(mask, [1], false);
  const beta = input(g, 'beta', 'float32', []);
  const dpo = {
    chosen: O.gather(lp.sums, ci), rejected: O.gather(lp.sums, ri),
    refChosen: input(g, 'ref_chosen', 'float32', ['pairs']), refRejected: input(g, 'ref_rejected', 'float32', ['pairs']),
    chosenLength: O.gather(lengths, ci), rejectedLength: O.gather(lengths, ri),
  };
  const obj = dpoObjective(dpo, { lossType: o.lossType, beta, labelSmoothing: o.labelSmoothing });
  let loss = obj.loss;
  const metrics = { ...obj.metrics };
  if (o.rpoAlpha > 0) {
    const nll = nllTerm(dpo.chosen, dpo.chosenLength, o.rpoAlpha);
    metrics['nll_loss'] = O.stopGradient(nll);
    loss = O.add(loss, nll);
  }
  const params = [...lora.pairs.values()].flatMap((x) => [x.a, x.b]);
  return o.accumulate ? gradProgram({ loss, params, metrics }) : trainProgram({ loss, params, metrics, optimizer: o.optimizer });
}

export interface KtoProgramOptions { desirableWeight: number; undesirableWeight: number; optimizer: AdamWConfig; accumulate: boolean }

/**
 * KTO train step over 2N rows: rows `own_index` [N] are (x_i, y_i), rows `kl_index` [N] are the
 * mismatched (x_i, y_{i+1}) pairs for z₀; `ref_logps`, `ref_kl_logps`, `desirable` [N].
 */
export function ktoProgram(p: Programs, o: KtoProgramOptions): ProgramInfo {
  const g = graph('align_kto');
  const inp = forwardInputs(g, p.ckpt.spec);
  const { targets, mask } = batchInputs(g);
  const lora = loraParams(g, p.ckpt.spec, p.lora);
  const { logits } = forward(p.ckpt, inp, lora);
  const lp = responseLogps(logits, targets, mask);
  const own = input(g, 'own_index', 'int64', ['rows']);
  const kl = input(g, 'kl_index', 'int64', ['rows']);
  const obj = ktoObjective({
    logps: O.gather(lp.sums, own), refLogps: input(g, 'ref_logps', 'float32', ['rows']),
    klLogps: O.gather(lp.sums, kl), refKlLogps: input(g, 'ref_kl_logps', 'float32', ['rows']),
    desirable: input(g, 'desirable', 'float32', ['rows']),
  }, { beta: input(g, 'beta', 'float32', []), desirableWeight: o.desirableWeight, undesirableWeight: o.undesirableWeight });
  const params = [...lora.pairs.values()].flatMap((x) => [x.a, x.b]);
  const spec = { loss: obj.loss, params, metrics: obj.metrics };
  return o.accumulate ? gradProgram(spec) : trainProgram({ ...spec, optimizer: o.optimizer });
}

/**
 * Exact token-level KL(π‖π_ref) = Σ_v π(v)(log π(v) − log π_ref(v)) at every target position,
 * policy adapter `lora.*`, reference adapter `ref.*`. Outputs the masked sum and the count.
 * `target_mask` selects the positions (the held-out responses' tokens).
 */
export async function klSession(p: Programs, refLora: LoraConfig): Promise<Session> {
  const g = graph('align_kl');
  const inp = forwardInputs(g, p.ckpt.spec);
  const { mask } = batchInputs(g);
  const pol = forward(p.ckpt, inp, loraParams(g, p.ckpt.spec, p.lora, 'lora', false));
  const ref = forward(p.ckpt, inp, loraParams(g, p.ckpt.spec, refLora, 'ref', false));
  const lp = O.logSoftmax(pol.logits, -1);
  const lq = O.logSoftmax(ref.logits, -1);
  const kl = O.reduceSum(O.mul(O.exp(lp), O.sub(lp, lq)), [2], false);
  output(O.sumAll(O.mul(kl, mask)), 'kl_sum');
  output(O.sumAll(mask), 'kl_count');
  return createSession(toOnnx(g).bytes, p.runtime);
}

export async function logitsSession(p: Programs): Promise<Session> {
  const g = graph('align_logits');
  const inp = forwardInputs(g, p.ckpt.spec);
  const { logits, hidden } = forward(p.ckpt, inp, loraParams(g, p.ckpt.spec, p.lora, 'lora', false));
  output(logits, 'logits');
  output(hidden, 'hidden');
  return createSession(toOnnx(g).bytes, p.runtime);
}
