/**
 * Response log-probs on packed batches (packing.ts): the forward over the packed rows, then the
 * final hidden states gathered at the N response positions only, so the LM head, its log-softmax
 * and the target gather run on [N, H] instead of [B, T, H] — and so do their gradients in a train
 * step. The same numbers as buildLogProbs on a right-padded batch of the same sequences
 * (test/model/packing.test.ts); the DPO/KTO steps, reference log-probs and the KL check use these.
 */
import { type Declared, type Graph, type Value, declareInputs, floatInput, int64, ops as O } from '../engine/index.js';
import { type BaseWeights, type FloatType, type LoraValues, forward, packedBias } from './forward-graph.js';
import { type HeadOptions, headLogProbs } from './head.js';

/** The packed batch's inputs (names as fed; packedFeeds in model.ts makes them). */
export const packedInputDecl = (dtype: FloatType = 'float32') => ({
  input_ids: int64(['rows', 'seq']),
  /** Each token's position in its own sequence. */
  position_ids: int64(['rows', 'seq']),
  /** Attention stays within a segment; −1 = pad. */
  segment_ids: int64(['rows', 'seq']),
  /** 0 = the segment's prompt (seen by all of it), k > 0 = a response that only its own tokens see. */
  branch_ids: int64(['rows', 'seq']),
  /** Flat row · T + column of the positions whose next token is a response token. */
  response_index: int64(['tokens']),
  response_targets: int64(['tokens']),
  /** [S, N] 1 where response token n belongs to sequence s. */
  response_owner: floatInput(dtype, ['seqs', 'tokens']),
}) as const;

export type PackedInputDecl = ReturnType<typeof packedInputDecl>;
export const PACKED_INPUTS: PackedInputDecl = packedInputDecl();

export interface PackedInputs {
  ids: Value; positions: Value; segments: Value; branches: Value;
  responseIndex: Value; responseTargets: Value; responseOwner: Value;
}

/** The packed batch inputs of a program's declared inputs. */
export function packedValues(x: Declared<PackedInputDecl>): PackedInputs {
  return {
    ids: x.input_ids, positions: x.position_ids, segments: x.segment_ids, branches: x.branch_ids,
    responseIndex: x.response_index, responseTargets: x.response_targets, responseOwner: x.response_owner,
  };
}

/** Declare the packed batch inputs (PACKED_INPUTS, in `dtype`). */
export function packedInputs(g: Graph, dtype: FloatType = 'float32'): PackedInputs {
  return packedValues(declareInputs(g, packedInputDecl(dtype)));
}

/** Final hidden states [N, H] at the response positions of a packed batch. */
export function responseHidden(base: BaseWeights, lora: LoraValues | null, inp: PackedInputs, opts: { recompute?: boolean } = {}): Value {
  const bias = packedBias(base.spec, inp.positions, inp.segments, inp.branches, base.dtype);
  const hidden = forward(base, lora, { ids: inp.ids, positions: inp.positions, bias, recompute: opts.recompute ?? false }).hidden;
  return O.gather(O.reshape(hidden, [-1, base.spec.hiddenSize]), inp.responseIndex, 0);
}

export interface ResponseLogProbs {
  /** [N] log p(response token). */
  tokenLogps: Value;
  /** [S] Σ over each sequence's response tokens. */
  seqLogps: Value;
  /** [S] response tokens per sequence. */
  lengths: Value;
}

/** Response log-probabilities of a packed batch (policy with trainable LoRA, or a reference). */
export function responseLogProbs(base: BaseWeights, lora: LoraValues | null, inp: PackedInputs, opts: HeadOptions = {}): ResponseLogProbs {
  const tokenLogps = headLogProbs(base, responseHidden(base, lora, inp, opts), inp.responseTargets, opts);
  // [S, N] · [N, 1]: each sequence's sum as one product (the owner matrix is data, not differentiated).
  const seqLogps = O.squeeze(O.matmul(inp.responseOwner, O.unsqueeze(tokenLogps, [1])), [1]);
  return { tokenLogps, seqLogps, lengths: O.reduceSum(inp.responseOwner, [1], false) };
}
