/**
 * Preference objectives as engine graph functions. Each takes sequence log-prob values (summed
 * over response tokens) of the policy — which carry gradients — and the reference's (graph
 * inputs, cached once per round), and returns the loss plus TRL-named metrics. They know nothing
 * of the model, so the closed-form tests feed hand-made log-probs and the round runner feeds the
 * outputs of the model's log-prob graph.
 *
 * Notation (Rafailov et al. 2023; TRL's DPOTrainer): r± = log π(y±|x) − log π_ref(y±|x), summed over
 * response tokens; Δ = r⁺ − r⁻.
 */
import { type Value, ops as O } from '../engine/index.js';
import { labelSmoothingRefusal } from '../policy/schema.js';

/** TRL's DPOConfig.loss_type values alignd implements. */
export type DpoLossType = 'sigmoid' | 'ipo' | 'robust' | 'hinge';

export interface DpoInputs {
  /** Policy Σ log π(y⁺|x), [P]. */
  chosen: Value;
  rejected: Value;
  /** Reference Σ log π_ref, [P] (inputs: no gradient flows into them). */
  refChosen: Value;
  refRejected: Value;
  /** Response token counts [P]; IPO uses per-token-averaged log-ratios (current TRL). */
  chosenLength?: Value;
  rejectedLength?: Value;
}

export interface DpoOptions {
  lossType: DpoLossType;
  /** β: a number, or a graph input so an adaptive controller can change it without a rebuild. */
  beta: number | Value;
  /**
   * ε for `robust` (Chowdhury et al. 2024), in [0, 0.5); 0 = none. TRL ≥ 0.29 ignores it for
   * `sigmoid` (cDPO lives on only as `robust`), so alignd refuses it there rather than train differently.
   */
  labelSmoothing: number;
}

export interface Objective {
  /** Mean loss over the batch (scalar). */
  loss: Value;
  /** TRL metric names → scalar values (no gradient through them). */
  metrics: Record<string, Value>;
}

const mean = (x: Value): Value => O.meanAll(x);

/** log σ with the true gradient at 0 (the engine's; re-exported for the heads and tests). */
export const logSigmoid = O.logSigmoid;

/** Per-pair DPO-family losses [P] (before the mean), for the objective and for tests. */
export function dpoLosses(inp: DpoInputs, opt: DpoOptions): Value {
  const rChosen = O.sub(inp.chosen, inp.refChosen);
  const rRejected = O.sub(inp.rejected, inp.refRejected);
  const beta = opt.beta;
  switch (opt.lossType) {
    case 'sigmoid': {
      // Rafailov et al. 2023, eq. 7: −log σ(β Δ); label_smoothing plays no part (TRL ≥ 0.29,
      // DPOTrainer._compute_loss, loss_type "sigmoid").
      return O.neg(logSigmoid(O.mul(O.sub(rChosen, rRejected), beta)));
    }
    case 'robust': {
      // Chowdhury et al. 2024 (rDPO), eq. 8: [−(1−ε) log σ(βΔ) + ε log σ(−βΔ)] / (1 − 2ε):
      // an unbiased loss under preference flips with probability ε.
      const eps = opt.labelSmoothing;
      const z = O.mul(O.sub(rChosen, rRejected), beta);
      const fwd = O.mul(logSigmoid(z), -(1 - eps));
      const back = O.mul(logSigmoid(O.neg(z)), eps);
      return O.div(O.add(fwd, back), 1 - 2 * eps);
    }
    case 'ipo': {
      // Azar et al. 2023, eq. 17: (Δ − 1/(2β))², with TRL's per-token averaging of the log-ratios.
      const lc = inp.chosenLength === undefined ? rChosen : O.div(rChosen, inp.chosenLength);
      const lr = inp.rejectedLength === undefined ? rRejected : O.div(rRejected, inp.rejectedLength);
      const half = typeof beta === 'number' ? 0.5 / beta : O.div(0.5, beta);
      const d = O.sub(O.sub(lc, lr), half);
      return O.mul(d, d);
    }
    case 'hinge': {
      // SLiC-HF (Zhao et al. 2023), eq. 2 calibration loss with δ = 1/β: relu(1 − βΔ).
      return O.relu(O.sub(1, O.mul(O.sub(rChosen, rRejected), beta)));
    }
  }
}

/** TRL's DPO metrics: rewards/* = β·r, accuracies = mean[r⁺ > r⁻], logps/* = policy sums. */
export function dpoMetrics(inp: DpoInputs, beta: number | Value): Record<string, Value> {
  const rc = O.stopGradient(O.mul(O.sub(inp.chosen, inp.refChosen), beta));
  const rr = O.stopGradient(O.mul(O.sub(inp.rejected, inp.refRejected), beta));
  return {
    'rewards/chosen': mean(rc),
    'rewards/rejected': mean(rr),
    'rewards/accuracies': mean(O.cast(O.greater(rc, rr), rc.dtype)),
    'rewards/margins': mean(O.sub(rc, rr)),
    'logps/chosen': mean(O.stopGradient(inp.chosen)),
    'logps/rejected': mean(O.stopGradient(inp.rejected)),
  };
}

export function dpoObjective(inp: DpoInputs, opt: DpoOptions): Objective {
  const eps = opt.labelSmoothing;
  if (!(eps >= 0 && eps < 0.5)) throw new RangeError(`label_smoothing must be in [0, 0.5), got ${eps}`);
  if (eps > 0 && opt.lossType !== 'robust') throw new RangeError(labelSmoothingRefusal(opt.lossType));
  return { loss: mean(dpoLosses(inp, opt)), metrics: dpoMetrics(inp, opt.beta) };
}

/**
 * RPO's NLL term (Pang et al. 2024, eq. 3), as TRL computes it (loss_type "sft" beside "sigmoid",
 * weight rpo_alpha): α · the token-level mean negative log-likelihood of the chosen responses —
 * Σ over the batch's chosen tokens / their count, so long responses weigh by their length.
 */
export function nllTerm(chosen: Value, chosenLength: Value, alpha: number): Value {
  return O.mul(O.div(O.neg(O.sumAll(chosen)), O.sumAll(chosenLength)), alpha);
}

export interface KtoInputs {
  /** Policy Σ log π(y|x) of each row's own completion, [N]. */
  logps: Value;
  refLogps: Value;
  /** Policy and reference Σ log-probs of a mismatched completion (y of another row) given x, [N]. */
  klLogps: Value;
  refKlLogps: Value;
  /** 1 for desirable (up) rows, 0 for undesirable (down), [N]. */
  desirable: Value;
}

export interface KtoOptions {
  beta: number | Value;
  /** λ_D and λ_U (TRL `desirable_weight`, `undesirable_weight`). */
  desirableWeight: number;
  undesirableWeight: number;
}

/**
 * KTO (Ethayarajh et al. 2024, eq. 8): v(x,y) = λ_D σ(β(r − z₀)) for desirable, λ_U σ(β(z₀ − r))
 * for undesirable; loss = λ_y − v. z₀ estimates KL(π‖π_ref) from mismatched pairs in the batch,
 * detached and clamped at 0 as in TRL's KTOTrainer.
 */
export function ktoObjective(inp: KtoInputs, opt: KtoOptions): Objective {
  const wD = opt.desirableWeight;
  const wU = opt.undesirableWeight;
  const r = O.sub(inp.logps, inp.refLogps);
  const z0 = O.stopGradient(O.max(mean(O.sub(inp.klLogps, inp.refKlLogps)), 0));
  const dLoss = O.mul(O.sub(1, O.sigmoid(O.mul(O.sub(r, z0), opt.beta))), wD);
  const uLoss = O.mul(O.sub(1, O.sigmoid(O.mul(O.sub(z0, r), opt.beta))), wU);
  const isD = inp.desirable;
  const perRow = O.add(O.mul(isD, dLoss), O.mul(O.sub(1, isD), uLoss));
  const rewards = O.stopGradient(O.mul(r, opt.beta));
  const nD = O.max(O.sumAll(isD), 1);
  const nU = O.max(O.sumAll(O.sub(1, isD)), 1);
  return {
    loss: mean(perRow),
    metrics: {
      kl: z0,
      'rewards/chosen': O.div(O.sumAll(O.mul(rewards, isD)), nD),
      'rewards/rejected': O.div(O.sumAll(O.mul(rewards, O.sub(1, isD))), nU),
      'logps/chosen': O.div(O.sumAll(O.mul(O.stopGradient(inp.logps), isD)), nD),
      'logps/rejected': O.div(O.sumAll(O.mul(O.stopGradient(inp.logps), O.sub(1, isD))), nU),
    },
  };
}
