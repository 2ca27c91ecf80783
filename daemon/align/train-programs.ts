/**
 * The train-step and KL programs alignment runs, built from daemon/model's graph functions
 * (`trainGraph`, `declareLora`, `declareInputs`, `responseLogProbs`, `responseHidden`, `headKl`) with
 * the objectives of losses.ts on top, all on packed batches (daemon/model/packing.ts) whose LM head
 * runs at response positions only:
 *   - dpo / kto: policy log-probs → objective → gradients (+ clipping and AdamW, or accumulation);
 *   - kl: exact per-token KL(π‖π_ref) over the full vocabulary with the policy and reference
 *     adapters both inputs of one program, the head over vocabulary blocks, so no [N, V]
 *     distribution is built or leaves the session.
 * Inference (reference log-probs, hidden states, generation) uses the Model's own programs.
 * Every program takes adapter tensors as inputs, so one session serves every round.
 */
import {
  type AdamWConfig, type InputDecls, type ProgramInfo, type Value, declareInputs, float32, gradProgram, int64, ops as O, output, trainProgram,
} from '../engine/index.js';
import type { Model } from '../model/model.js';
import type { LoraConfig } from '../model/lora.js';
import { declareLora } from '../model/forward-graph.js';
import { type HeadOptions, headKl } from '../model/head.js';
import { PACKED_INPUTS, type PackedInputDecl, packedValues, responseHidden, responseLogProbs } from '../model/response-programs.js';
import { type DpoLossType, dpoObjective, ktoObjective, nllTerm } from './losses.js';

/**
 * DPO train step over a packed batch of 2P sequences: `chosen_index`/`rejected_index` [P] pick each
 * pair's sequences; `ref_chosen`/`ref_rejected` [P] are the cached reference log-probs; `beta` scalar.
 */
export const dpoInputs = {
  ...PACKED_INPUTS,
  chosen_index: int64(['pairs']),
  rejected_index: int64(['pairs']),
  ref_chosen: float32(['pairs']),
  ref_rejected: float32(['pairs']),
  beta: float32([]),
} as const;
export type DpoProgramInputs = typeof dpoInputs;

/**
 * KTO train step over 2N sequences: `own_index` [N] are (x_i, y_i), `kl_index` [N] are the
 * mismatched (x_i, y_{i+1}) pairs for z₀; `ref_logps`, `ref_kl_logps`, `desirable` [N].
 */
export const ktoInputs = {
  ...PACKED_INPUTS,
  own_index: int64(['rows']),
  kl_index: int64(['rows']),
  ref_logps: float32(['rows']),
  ref_kl_logps: float32(['rows']),
  desirable: float32(['rows']),
  beta: float32([]),
} as const;
export type KtoProgramInputs = typeof ktoInputs;

/** The exact-KL program: a packed batch (plus both adapters' tensors, named by their shapes). */
export const klInputs: PackedInputDecl = PACKED_INPUTS;

export interface DpoProgramOptions {
  lossType: DpoLossType;
  labelSmoothing: number;
  /** RPO's α on the chosen NLL; null or 0 = off. */
  rpoAlpha: number | null;
  optimizer: AdamWConfig;
  /** true: a gradProgram for micro-batch accumulation; false: one-step trainProgram. */
  accumulate: boolean;
  /** Activation checkpointing per decoder layer (policy objective.gradient_checkpointing). */
  recompute: boolean;
}

/** The trainable policy's log-probs on a program's declared inputs (a packed batch and more). */
function policyLogps<I extends InputDecls & PackedInputDecl>(model: Model, lora: LoraConfig, name: string, decl: I, recompute: boolean) {
  const { g, base } = model.trainGraph(name);
  // training: true applies the config's lora_dropout, as PEFT does in train mode.
  const policy = declareLora(g, model.spec, lora, 'param', 'float32', { training: true });
  const x = declareInputs(g, decl);
  const lp = responseLogProbs(base, policy, packedValues(x), { recompute });
  const params = [...policy.pairs.values()].flatMap((p) => [p.a, p.b]);
  return { x, lp, params };
}

export function dpoProgram(model: Model, lora: LoraConfig, o: DpoProgramOptions): ProgramInfo<DpoProgramInputs> {
  const { x, lp, params } = policyLogps(model, lora, 'align_dpo', dpoInputs, o.recompute);
  const dpo = {
    chosen: O.gather(lp.seqLogps, x.chosen_index), rejected: O.gather(lp.seqLogps, x.rejected_index),
    refChosen: x.ref_chosen, refRejected: x.ref_rejected,
    chosenLength: O.gather(lp.lengths, x.chosen_index), rejectedLength: O.gather(lp.lengths, x.rejected_index),
  };
  const obj = dpoObjective(dpo, { lossType: o.lossType, beta: x.beta, labelSmoothing: o.labelSmoothing });
  let loss = obj.loss;
  const metrics: Record<string, Value> = { ...obj.metrics };
  if (o.rpoAlpha !== null && o.rpoAlpha > 0) {
    const nll = nllTerm(dpo.chosen, dpo.chosenLength, o.rpoAlpha);
    metrics['nll_loss'] = O.stopGradient(nll);
    loss = O.add(loss, nll);
  }
  const spec = { loss, params, metrics, inputs: dpoInputs };
  return o.accumulate ? gradProgram(spec) : trainProgram({ ...spec, optimizer: o.optimizer });
}

export interface KtoProgramOptions { desirableWeight: number; undesirableWeight: number; optimizer: AdamWConfig; accumulate: boolean; recompute: boolean }

export function ktoProgram(model: Model, lora: LoraConfig, o: KtoProgramOptions): ProgramInfo<KtoProgramInputs> {
  const { x, lp, params } = policyLogps(model, lora, 'align_kto', ktoInputs, o.recompute);
  const obj = ktoObjective({
    logps: O.gather(lp.seqLogps, x.own_index), refLogps: x.ref_logps,
    klLogps: O.gather(lp.seqLogps, x.kl_index), refKlLogps: x.ref_kl_logps,
    desirable: x.desirable,
  }, { beta: x.beta, desirableWeight: o.desirableWeight, undesirableWeight: o.undesirableWeight });
  const spec = { loss: obj.loss, params, metrics: obj.metrics, inputs: ktoInputs };
  return o.accumulate ? gradProgram(spec) : trainProgram({ ...spec, optimizer: o.optimizer });
}

/** Prefix of the reference adapter's tensors in the KL program (the policy's have none). */
export const REF_PREFIX = 'ref.';

/**
 * Exact token-level KL(π‖π_ref) = Σ_v π(v)(log π(v) − log π_ref(v)) at the response positions of
 * a packed batch, summed → `kl_sum`, `kl_count`. `policy`/`ref` null = the base model alone on that
 * side. The head runs over vocabulary blocks (headKl) at the N response positions only: the
 * session's arena holds [N, block] at most.
 */
export function klProgram(model: Model, policy: LoraConfig | null, ref: LoraConfig | null, opts: Pick<HeadOptions, 'blockRows'> = {}) {
  const { g, base } = model.trainGraph('align_kl', 'float32', 'fused'); // forward only: fused attention/RMSNorm
  const inp = packedValues(declareInputs(g, klInputs));
  const hidden = (cfg: LoraConfig | null, prefix: string) => {
    const lora = cfg === null ? null : declareLora(g, model.spec, cfg, 'input', 'float32', { prefix });
    return responseHidden(base, lora, inp);
  };
  const kl = headKl(base, hidden(policy, ''), hidden(ref, REF_PREFIX), opts);
  output(O.sumAll(kl), 'kl_sum');
  output(O.sumAll(inp.responseOwner), 'kl_count');
  return g;
}
