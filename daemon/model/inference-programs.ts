/**
 * Model programs on the engine: graph functions a train step calls (log-probs of responses,
 * hidden state at the last token, full-vocabulary log-probs, per-token KL) and the inference
 * programs built from them (one ONNX graph each; LoRA tensors are graph inputs so one session
 * serves every adapter of a LoRA shape).
 *
 * Input and output names are in `IO`. Batches are right-padded (batch.ts) except for generation,
 * which left-pads prompts and feeds positions and the attention bias itself (kv-generation.ts), and
 * the response log-prob program, which takes packed batches (packing.ts, response-programs.ts).
 */
import { type Declared, type Graph, type Value, declareInputs, floatInput, graph, input, int64, ops as O, output } from '../engine/index.js';
import type { LoraConfig } from './lora.js';
import {
  type BaseWeights, type FloatType, type ForwardKernels, type GraphWeights, type LoraValues, declareBaseWeights, declareLora, forward, hiddenAt,
  fusedKernelsFor, lastTokenHidden, lmHead, sequenceBias, sequencePositions,
} from './forward-graph.js';
import { type HeadOptions, headLogProbs } from './head.js';
import { type PackedInputDecl, packedInputDecl, packedValues, responseLogProbs } from './response-programs.js';

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
export interface ProgramInputs {
  logprobs: LogProbInputDecl; response_logprobs: PackedInputDecl; hidden: TokenInputs; vocab_logprobs: VocabLogProbInputs; logits: TokenInputs;
}
export const programInputs = (dtype: FloatType = 'float32'): ProgramInputs => ({
  logprobs: logProbInputDecl(dtype), response_logprobs: packedInputDecl(dtype), hidden: tokenInputs(dtype), vocab_logprobs: vocabLogProbInputs(dtype), logits: tokenInputs(dtype),
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

/**
 * 'decode' is the generation step: new tokens [B, T] against a KV cache [B, n_kv, past, d]
 * (past 0 for the prefill), giving the last position's logits and the grown cache.
 */
export type ProgramKind = 'logprobs' | 'response_logprobs' | 'hidden' | 'vocab_logprobs' | 'logits' | 'decode';

export interface ProgramOptions {
  dtype?: FloatType;
  /** Attention and RMSNorm kernels (forward-graph.ts, ForwardKernels): float32 programs default to the CPU provider's fused ones. */
  kernels?: ForwardKernels;
}

/**
 * One inference program. LoRA (when `lora` is given) is declared with mode 'input': feed the
 * adapter's tensors under `loraNames('', path)` on every run. float32 programs run attention and
 * RMSNorm on onnxruntime's fused kernels (they are forward-only); float64 ones on the composites.
 */
export function buildProgram(kind: ProgramKind, w: GraphWeights, lora: LoraConfig | null, opts: ProgramOptions = {}): Graph {
  const dtype = opts.dtype ?? 'float32';
  const g = graph(`${w.spec.modelType}_${kind}`);
  const base = declareBaseWeights(g, w, dtype, opts.kernels ?? (dtype === 'float32' ? fusedKernelsFor('cpu', w.spec) : 'composite'));
  const lv = lora === null ? null : declareLora(g, w.spec, lora, 'input', dtype);
  const decl = programInputs(dtype);
  if (kind === 'logprobs') {
    const r = buildLogProbs(base, lv, logProbValues(declareInputs(g, decl.logprobs)));
    output(r.tokenLogps, IO.tokenLogps);
    output(r.seqLogps, IO.seqLogps);
  } else if (kind === 'response_logprobs') {
    const r = responseLogProbs(base, lv, packedValues(declareInputs(g, decl.response_logprobs)));
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
