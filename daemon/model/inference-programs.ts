/**
 * Model programs on the engine: graph functions a train step calls (log-probs of responses,
 * hidden state at the last token, full-vocabulary log-probs, per-token KL) and the inference
 * programs built from them (one ONNX graph each; LoRA tensors are graph inputs so one session
 * serves every adapter of a LoRA shape).
 *
 * Input and output names are in `IO`. Batches are right-padded (batch.ts) except for generation,
 * which left-pads prompts and feeds positions and the attention bias itself (kv-generation.ts).
 */
import { type Declared, type Graph, type Value, declareInputs, floatInput, graph, input, int64, ops as O, output, recompute } from '../engine/index.js';
import type { LoraConfig } from './lora.js';
import {
  type BaseWeights, type FloatType, type GraphWeights, type LoraValues, declareBaseWeights, declareLora, forward, hiddenAt,
  lastTokenHidden, lmHead, sequenceBias, sequencePositions,
} from './forward-graph.js';
import { lmHeadName } from './weights.js';

export const IO = {
  inputIds: 'input_ids',
  attentionMask: 'attention_mask',
  targets: 'targets',
  targetMask: 'target_mask',
  /** [B, K] positions whose next-token distribution is wanted (vocab log-probs, KL). */
  positions: 'positions',
  /** Generation: [B, T] position of each token, [B, 1, T, S] additive attention bias. */
  positionIds: 'position_ids',
  attnBias: 'attn_bias',
  tokenLogps: 'token_logps',
  seqLogps: 'seq_logps',
  lastHidden: 'last_hidden',
  vocabLogps: 'vocab_logps',
  logits: 'logits',
  pastKey: (l: number): string => `past.${l}.key`,
  pastValue: (l: number): string => `past.${l}.value`,
  presentKey: (l: number): string => `present.${l}.key`,
  presentValue: (l: number): string => `present.${l}.value`,
} as const;

/**
 * The data inputs of the inference programs the training round feeds (program-inputs.ts): a
 * right-padded token batch; with next-token targets for log-probs; with positions for vocabulary
 * log-probs. Train programs extend LOGPROB_INPUTS with their own.
 */
export const tokenInputs = (dtype: FloatType = 'float32') => ({
  [IO.inputIds]: int64(['batch', 'seq']),
  /** 1 for real tokens, 0 for pads. */
  [IO.attentionMask]: floatInput(dtype, ['batch', 'seq']),
}) as const;

export const logProbInputDecl = (dtype: FloatType = 'float32') => ({
  ...tokenInputs(dtype),
  /** The next token at each position. */
  [IO.targets]: int64(['batch', 'seq']),
  /** 1 where the target is a response token. */
  [IO.targetMask]: floatInput(dtype, ['batch', 'seq']),
}) as const;

export const vocabLogProbInputs = (dtype: FloatType = 'float32') => ({
  ...tokenInputs(dtype),
  /** [B, K] positions whose next-token distribution is wanted. */
  [IO.positions]: int64(['batch', 'k']),
}) as const;

export type TokenInputs = ReturnType<typeof tokenInputs>;
export type LogProbInputDecl = ReturnType<typeof logProbInputDecl>;
export type VocabLogProbInputs = ReturnType<typeof vocabLogProbInputs>;
export const LOGPROB_INPUTS: LogProbInputDecl = logProbInputDecl();

/** The programs of a loaded Model whose inputs are declared (decode's KV cache is named per layer). */
export interface ProgramInputs { logprobs: LogProbInputDecl; hidden: TokenInputs; vocab_logprobs: VocabLogProbInputs; logits: TokenInputs }
export const programInputs = (dtype: FloatType = 'float32'): ProgramInputs => ({
  logprobs: logProbInputDecl(dtype), hidden: tokenInputs(dtype), vocab_logprobs: vocabLogProbInputs(dtype), logits: tokenInputs(dtype),
});

export interface LogProbInputs {
  /** [B, T] int64. */
  ids: Value;
  /** [B, T] 1 for real tokens, 0 for pads. */
  attentionMask: Value;
  /** [B, T] int64 next token at each position. */
  targets: Value;
  /** [B, T] 1 where the target is a response token. */
  targetMask: Value;
}

/** The log-prob batch inputs of a program's declared inputs, as buildLogProbs takes them. */
export function logProbValues(x: Declared<LogProbInputDecl>): LogProbInputs {
  return { ids: x[IO.inputIds], attentionMask: x[IO.attentionMask], targets: x[IO.targets], targetMask: x[IO.targetMask] };
}

/** Declare the log-prob batch inputs (LOGPROB_INPUTS, in `dtype`). */
export function logProbInputs(g: Graph, dtype: FloatType = 'float32'): LogProbInputs {
  return logProbValues(declareInputs(g, logProbInputDecl(dtype)));
}

/** Final hidden states [B, T, H] of a right-padded batch; `recompute`: checkpoint each layer (train steps). */
export function sequenceHidden(base: BaseWeights, lora: LoraValues | null, ids: Value, attentionMask: Value, opts: { recompute?: boolean } = {}): Value {
  const bias = sequenceBias(base.spec, attentionMask, base.dtype);
  return forward(base, lora, { ids, positions: sequencePositions(ids), bias, recompute: opts.recompute ?? false }).hidden;
}

/** log p(target) at every position of logits [..., V]: log_softmax, then the target's entry. */
export function targetLogProbs(logits: Value, targets: Value): Value {
  return O.squeeze(O.gatherElements(O.logSoftmax(logits, -1), O.unsqueeze(targets, [-1]), -1), [-1]);
}

/** Vocabulary rows per block of headLogProbs: a block's logits [B, T, rows] are the program's largest tensors. */
export const HEAD_BLOCK_ROWS = 16384;

export interface HeadOptions {
  /** Recompute each decoder layer and head block in the backward pass (train steps). */
  recompute?: boolean;
  /** Vocabulary rows per head block (default HEAD_BLOCK_ROWS; tests force blocks on small vocabularies). */
  blockRows?: number;
}

/** log Σ exp over the last axis, shifted by the (constant to autodiff) maximum; keeps the axis. */
function logSumExp(x: Value): Value {
  const m = O.stopGradient(O.reduceMax(x, [-1], true));
  return O.add(O.log(O.reduceSum(O.exp(O.sub(x, m)), [-1], true)), m);
}

/**
 * log p(target) [B, T] from final hidden states [B, T, H] without a [B, T, V] tensor: the head runs
 * over blocks of vocabulary rows (each block's weight is its own reference into the head's bytes);
 * each block gives its log-sum-exp and the target's logit where the target falls in it, and
 * log p = target logit − log Σ_blocks exp(block log-sum-exp). With `recompute` every block is a
 * recompute() segment: a train step keeps [B, T] values per block and recomputes the block's
 * logits in its backward pass.
 */
export function headLogProbs(base: BaseWeights, hidden: Value, targets: Value, opts: HeadOptions = {}): Value {
  const V = base.spec.vocabSize;
  const rows = opts.blockRows ?? HEAD_BLOCK_ROWS;
  if (V <= rows) return targetLogProbs(lmHead(base, hidden), targets);
  const blocks = Math.ceil(V / rows);
  const size = Math.ceil(V / blocks);
  const head = lmHeadName(base.spec);
  const lses: Value[] = [];
  const picks: Value[] = [];
  for (let start = 0; start < V; start += size) {
    const end = Math.min(V, start + size);
    const block = (): [Value, Value] => {
      const z = O.matmul(hidden, base.block(head, start, end, hidden), { transB: true });
      const local = O.sub(targets, start);
      const inside = O.and(O.greaterOrEqual(local, 0), O.less(local, end - start));
      const pick = O.squeeze(O.gatherElements(z, O.unsqueeze(O.where(inside, local, 0), [-1]), -1), [-1]);
      return [O.squeeze(logSumExp(z), [-1]), O.mul(pick, O.cast(inside, z.dtype))];
    };
    const [lse, pick] = opts.recompute ? recompute(hidden.g, [hidden], block) : block();
    lses.push(O.unsqueeze(lse, [-1]));
    picks.push(pick);
  }
  return O.sub(O.sum(picks), O.squeeze(logSumExp(O.concat(lses, -1)), [-1]));
}

export interface LogProbs {
  /** [B, T] log p(target) where target_mask is 1, else 0. */
  tokenLogps: Value;
  /** [B] Σ over the response tokens. */
  seqLogps: Value;
  /** [B, T, H] final hidden states (for heads sharing the forward). */
  hidden: Value;
}

/**
 * Response log-probabilities of a batch: the graph function a train step calls with trainable
 * LoRA (policy) or fixed LoRA / none (reference).
 */
export function buildLogProbs(base: BaseWeights, lora: LoraValues | null, inp: LogProbInputs, opts: HeadOptions = {}): LogProbs {
  const hidden = sequenceHidden(base, lora, inp.ids, inp.attentionMask, opts);
  const tokenLogps = O.mul(headLogProbs(base, hidden, inp.targets, opts), inp.targetMask);
  return { tokenLogps, seqLogps: O.reduceSum(tokenLogps, [1], false), hidden };
}

/** Log-probs over the whole vocabulary [B, K, V] of the next token after each of `positions` [B, K]. */
export function buildVocabLogProbs(base: BaseWeights, lora: LoraValues | null, ids: Value, attentionMask: Value, positions: Value): Value {
  const hidden = sequenceHidden(base, lora, ids, attentionMask);
  return O.logSoftmax(lmHead(base, hiddenAt(hidden, positions)), -1);
}

/** Exact per-position KL(p‖q) = Σ_v p_v (log p_v − log q_v) from log-probs [..., V]; result [...]. */
export function tokenKl(logpP: Value, logpQ: Value): Value {
  return O.reduceSum(O.mul(O.exp(logpP), O.sub(logpP, logpQ)), [-1], false);
}

/** log(exp x + exp y), shifted by the larger. */
function logAddExp(x: Value, y: Value): Value {
  const m = O.max(x, y);
  return O.add(O.log(O.add(O.exp(O.sub(x, m)), O.exp(O.sub(y, m)))), m);
}

/**
 * Exact KL(p‖q) [B, T] at every position, p and q the head's distributions over final hidden states
 * `hiddenP` and `hiddenQ` [B, T, H], without a [B, T, V] tensor (tokenKl over two log-softmaxes
 * when the vocabulary is one block). With z the logits,
 *   KL = Σ_v p_v (z_p,v − z_q,v) − lse(z_p) + lse(z_q),
 * and the first two terms are accumulated over vocabulary blocks with a running maximum (the online
 * softmax of Milakov & Gimelshein 2018, arXiv:1805.02867): per block m = max z_p, s = Σ exp(z_p − m),
 * a = Σ exp(z_p − m)(z_p − z_q); the running (M, S, A) are rescaled by exp(m − M) as M grows, and
 * Σ_v p_v (z_p − z_q) = A / S, lse(z_p) = M + log S. Each block's input is tied to the running values
 * (O.after), so onnxruntime runs the blocks one after another and one block's logits are alive at a time.
 */
export function headKl(base: BaseWeights, hiddenP: Value, hiddenQ: Value, opts: Pick<HeadOptions, 'blockRows'> = {}): Value {
  const V = base.spec.vocabSize;
  const rows = opts.blockRows ?? HEAD_BLOCK_ROWS;
  if (V <= rows) return tokenKl(O.logSoftmax(lmHead(base, hiddenP), -1), O.logSoftmax(lmHead(base, hiddenQ), -1));
  const blocks = Math.ceil(V / rows);
  const size = Math.ceil(V / blocks);
  const head = lmHeadName(base.spec);
  let acc: { m: Value; s: Value; a: Value; lq: Value } | null = null;
  for (let start = 0; start < V; start += size) {
    const end = Math.min(V, start + size);
    const tie = acc === null ? null : O.add(O.add(acc.s, acc.a), acc.lq);
    const hp = tie === null ? hiddenP : O.after(hiddenP, tie);
    const hq = tie === null ? hiddenQ : O.after(hiddenQ, tie);
    const zp = O.matmul(hp, base.block(head, start, end, hp), { transB: true });
    const zq = O.matmul(hq, base.block(head, start, end, hq), { transB: true });
    const m = O.reduceMax(zp, [-1], true);
    const e = O.exp(O.sub(zp, m));
    const s = O.reduceSum(e, [-1], true);
    const a = O.reduceSum(O.mul(e, O.sub(zp, zq)), [-1], true);
    const lq = logSumExp(zq);
    if (acc === null) {
      acc = { m, s, a, lq };
    } else {
      const M = O.max(acc.m, m);
      const was = O.exp(O.sub(acc.m, M));
      const now = O.exp(O.sub(m, M));
      acc = { m: M, s: O.add(O.mul(acc.s, was), O.mul(s, now)), a: O.add(O.mul(acc.a, was), O.mul(a, now)), lq: logAddExp(acc.lq, lq) };
    }
  }
  const { m, s, a, lq } = acc!;
  return O.squeeze(O.add(O.sub(O.div(a, s), O.add(m, O.log(s))), lq), [-1]);
}

/**
 * 'decode' is the generation step: new tokens [B, T] against a KV cache [B, n_kv, past, d]
 * (past 0 for the prefill), giving the last position's logits and the grown cache.
 */
export type ProgramKind = 'logprobs' | 'hidden' | 'vocab_logprobs' | 'logits' | 'decode';

export interface ProgramOptions {
  dtype?: FloatType;
}

/**
 * One inference program. LoRA (when `lora` is given) is declared with mode 'input': feed the
 * adapter's tensors under `loraNames('', path)` on every run.
 */
export function buildProgram(kind: ProgramKind, w: GraphWeights, lora: LoraConfig | null, opts: ProgramOptions = {}): Graph {
  const dtype = opts.dtype ?? 'float32';
  const g = graph(`${w.spec.modelType}_${kind}`);
  const base = declareBaseWeights(g, w, dtype);
  const lv = lora === null ? null : declareLora(g, w.spec, lora, 'input', dtype);
  const decl = programInputs(dtype);
  if (kind === 'logprobs') {
    const r = buildLogProbs(base, lv, logProbValues(declareInputs(g, decl.logprobs)));
    output(r.tokenLogps, IO.tokenLogps);
    output(r.seqLogps, IO.seqLogps);
  } else if (kind === 'hidden') {
    const x = declareInputs(g, decl.hidden);
    output(lastTokenHidden(sequenceHidden(base, lv, x[IO.inputIds], x[IO.attentionMask]), x[IO.attentionMask]), IO.lastHidden);
  } else if (kind === 'vocab_logprobs') {
    const x = declareInputs(g, decl.vocab_logprobs);
    output(buildVocabLogProbs(base, lv, x[IO.inputIds], x[IO.attentionMask], x[IO.positions]), IO.vocabLogps);
  } else if (kind === 'logits') {
    const x = declareInputs(g, decl.logits);
    output(lmHead(base, sequenceHidden(base, lv, x[IO.inputIds], x[IO.attentionMask])), IO.logits);
  } else {
    const { spec } = w;
    const ids = input(g, IO.inputIds, 'int64', ['batch', 'new']);
    const positions = input(g, IO.positionIds, 'int64', ['batch', 'new']);
    const bias = input(g, IO.attnBias, dtype, ['batch', 1, 'new', 'total']);
    const past = Array.from({ length: spec.numLayers }, (_, l) => ({
      key: input(g, IO.pastKey(l), dtype, ['batch', spec.numKvHeads, 'past', spec.headDim]),
      value: input(g, IO.pastValue(l), dtype, ['batch', spec.numKvHeads, 'past', spec.headDim]),
    }));
    const f = forward(base, lv, { ids, positions, bias, past });
    // Only the last position's logits: the next token of every (left-padded) row.
    const last = O.squeeze(O.slice(f.hidden, [-1], [2 ** 62], [1]), [1]);
    output(lmHead(base, last), IO.logits);
    f.present.forEach((p, l) => {
      output(p.key, IO.presentKey(l));
      output(p.value, IO.presentValue(l));
    });
  }
  return g;
}
