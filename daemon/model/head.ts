/**
 * The LM head's log-probabilities and exact KL over vocabulary blocks: graph functions on final
 * hidden states of any leading shape ([B, T, H] for every position, [N, H] for response positions
 * only), so no [..., V] tensor exists beyond one block of the vocabulary.
 */
import { type Value, ops as O, recompute } from '../engine/index.js';
import { type BaseWeights, lmHead } from './forward-graph.js';
import { lmHeadName } from './weights.js';

/** log p(target) at every position of logits [..., V]: log_softmax, then the target's entry. */
export function targetLogProbs(logits: Value, targets: Value): Value {
  return O.squeeze(O.gatherElements(O.logSoftmax(logits, -1), O.unsqueeze(targets, [-1]), -1), [-1]);
}

/** Vocabulary rows per block of headLogProbs: a block's logits [..., rows] are the program's largest tensors. */
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
 * log p(target) [...] from final hidden states [..., H] without a [..., V] tensor: the head runs
 * over blocks of vocabulary rows (each block's weight is its own reference into the head's bytes);
 * each block gives its log-sum-exp and the target's logit where the target falls in it, and
 * log p = target logit − log Σ_blocks exp(block log-sum-exp). With `recompute` every block is a
 * recompute() segment: a train step keeps [...] values per block and recomputes the block's
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
 * Exact KL(p‖q) [...] at every position given, p and q the head's distributions over final hidden
 * states `hiddenP` and `hiddenQ` [..., H], without a [..., V] tensor (tokenKl over two log-softmaxes
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
