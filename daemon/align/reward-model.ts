/**
 * The Bradley–Terry reward model: its own LoRA adapter on the shared frozen base and a scalar head
 * r(x, y) = w · pool(h(x, y)) on the final hidden states — the RLHF reward model (Ouyang et al.
 * 2022; TRL RewardTrainer on AutoModelForSequenceClassification, whose Llama `score` head has no
 * bias) — trained on preference pairs with
 *
 *   L = −log σ(r⁺ − r⁻ − m) + c·(r⁺ + r⁻)²    (m the pair's margin; c centering, Eisenstein et al. 2023,
 *                                               TRL `center_rewards_coefficient`)
 *
 * An ensemble of K members, each with its own initialisation and its own bootstrap resample of the
 * training pairs (Efron 1979; for reward models Coste et al. 2023): the members' spread is the
 * uncertainty the gate's `uncertain_spread` reads. Members warm-start from the previous round's.
 *
 * A BT reward is defined only up to an offset and its scale is whatever training left (a member's
 * init, warm starts and steps differ), so members' raw rewards are not comparable: their mean is
 * led by the widest member and their std measures scale differences, not disagreement. After each
 * round every member is put on one scale, fitted on the training split only (fitMemberScale):
 * centred on its mean training reward and scaled so that σ(scale·(r⁺ − r⁻)) is calibrated on the
 * training pairs (Platt 1999, without intercept) — preference log-odds, the unit the BT loss itself
 * uses. A member that ranks better gets the larger scale, so the ensemble mean leans on it.
 *
 * Pooling: 'last' = the hidden state at the last real token (TRL's), 'mean' = the mean over the
 * response tokens. They measured within noise of each other on the demo's feedback and on the
 * synthetic preference (daemon/align/README.md); 'mean' is the default.
 *
 * Programs are built from daemon/model's graph functions, one session per program with the
 * adapter and head as inputs (score) or parameters (train), shared by every member and round.
 */
import * as ort from 'onnxruntime-node';
import {
  type Graph, type ProgramInfo, type Session, type Value, createSession, f32, i64, initState, input, ops as O, output, param, run,
  toOnnx, trainProgram, trainStep,
} from '../engine/index.js';
import { AligndError } from '../base/errors.js';
import { createRng, type Rng } from '../base/random.js';
import { type BaseWeights, type FloatType, type LoraValues, declareLora, lastTokenHidden } from '../model/forward-graph.js';
import { sequenceHidden } from '../model/inference-programs.js';
import { packLogProbBatch, type LogProbBatch } from '../model/batch.js';
import { initLora, type LoraAdapter, type LoraConfig } from '../model/lora.js';
import { adapterFromTensors, loraFeeds, loraHostTensors, loraShapeKey } from '../model/model.js';
import type { ModelSpec } from '../model/hf-config.js';
import { peftKey } from '../model/peft.js';
import { fromFloat32, readSafetensors, toFloat32, writeSafetensors } from '../model/safetensors.js';
import type { Prompt, PromptResponseTokens } from '../model/tokenizer.js';
import type { RewardScore, RewardScorer } from '../gate/evidence.js';
import type { Example } from '../store/buffer.js';
import type { AlignModel } from './context.js';
import { expectedCalibrationError } from './heads.js';
import { learningRate } from './schedule.js';
import { type RewardRoundMetrics, asPairs, summarise } from './reward.js';

export type Pooling = 'last' | 'mean';

/** One member: a LoRA adapter, the score head's weights [H], and its common scale (fitMemberScale). */
export interface RewardMember {
  adapter: LoraAdapter;
  score: Float32Array;
  /** Its reward is scale·(w · pool(h) − offset): 0 and 1 until fitted. */
  offset: number;
  scale: number;
}

export interface RewardModel {
  pooling: Pooling;
  lora: LoraConfig;
  members: RewardMember[];
}

export interface RewardModelKnobs {
  /** Ensemble members K (each its own adapter, head, init and bootstrap resample). */
  members: number;
  pooling: Pooling;
  lora: { r: number; alpha: number; targetModules: string[]; dropout: number };
  learningRate: number;
  /** Passes over the round's training pairs per member (a bootstrap resample of the same size per pass). */
  epochs: number;
  /** Pairs per optimizer step. */
  batchSize: number;
  /** Cap on steps per member per round (0 = no cap). */
  maxSteps: number;
  weightDecay: number;
  maxGradNorm: number;
  /** c in c·(r⁺ + r⁻)² (Eisenstein et al. 2023 use 0.01). */
  centering: number;
  maxLength: number;
  seed: number;
  /** Share of a round's reward-model window replayed from older training pairs (the loop's window). */
  replayFraction: number;
}

export const DEFAULT_REWARD_MODEL_KNOBS: RewardModelKnobs = {
  members: 3, pooling: 'mean', lora: { r: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'], dropout: 0 },
  learningRate: 1e-2, epochs: 1, batchSize: 8, maxSteps: 0, weightDecay: 0, maxGradNorm: 1, centering: 0.01, maxLength: 128, seed: 0,
  replayFraction: 0.5,
};

/** The heads' round metrics (held-out counts, ECE, spread), plus what names and breaks down the ensemble. */
export interface RewardModelMetrics extends RewardRoundMetrics {
  /** What the gate's `reward.signal.name` calls this scorer. */
  name: string;
  stepsPerMember: number;
  /** Each member's own held-out accuracy. */
  memberAccuracy: number[];
}

// ---------------------------------------------------------------------------------------------
// Graph functions (the train and score programs, and the gradient check, build on these).

export const SCORE_WEIGHT = 'score.weight';
export const RESPONSE_MASK = 'response_mask';

export interface RewardInputs {
  /** [B, T] int64, right-padded. */
  ids: Value;
  /** [B, T] 1 for real tokens. */
  attentionMask: Value;
  /** [B, T] 1 at response tokens (mean pooling). */
  responseMask: Value;
}

export function rewardInputs(g: Graph, dtype: FloatType = 'float32'): RewardInputs {
  return {
    ids: input(g, 'input_ids', 'int64', ['batch', 'seq']),
    attentionMask: input(g, 'attention_mask', dtype, ['batch', 'seq']),
    responseMask: input(g, RESPONSE_MASK, dtype, ['batch', 'seq']),
  };
}

/**
 * Rewards [B] from the final hidden states h [B, T, H] and the score head w [1, H]:
 *   last: w · h at the last real token;   mean: the mean over response tokens t of w · h_t.
 */
export function buildRewards(base: BaseWeights, lora: LoraValues | null, score: Value, inp: RewardInputs, pooling: Pooling): Value {
  const hidden = sequenceHidden(base, lora, inp.ids, inp.attentionMask);
  if (pooling === 'last') {
    // (lastTokenHidden's shape is known only at run time; the product's gradient needs rank 2.)
    const last = O.reshape(lastTokenHidden(hidden, inp.attentionMask), [-1, base.spec.hiddenSize]);
    return O.reshape(O.matmul(last, score, { transB: true }), [-1]);
  }
  const perToken = O.reshape(O.matmul(hidden, score, { transB: true }), [0, -1]); // [B, T]
  const count = O.max(O.reduceSum(inp.responseMask, [1], false), 1); // [B]
  return O.div(O.reduceSum(O.mul(perToken, inp.responseMask), [1], false), count);
}

/**
 * Per-pair Bradley–Terry losses [P] of rewards [B]: rows `chosenIndex` [P] against `rejectedIndex`
 * [P], margins [P]; −log σ(r⁺ − r⁻ − m) + c·(r⁺ + r⁻)².
 */
export function btLosses(rewards: Value, chosenIndex: Value, rejectedIndex: Value, margin: Value, centering: number): { perPair: Value; chosen: Value; rejected: Value } {
  const chosen = O.gather(rewards, chosenIndex);
  const rejected = O.gather(rewards, rejectedIndex);
  let perPair = O.neg(O.logSigmoid(O.sub(O.sub(chosen, rejected), margin)));
  if (centering > 0) {
    const s = O.add(chosen, rejected);
    perPair = O.add(perPair, O.mul(O.mul(s, s), centering));
  }
  return { perPair, chosen, rejected };
}

// ---------------------------------------------------------------------------------------------
// Programs and sessions (per AlignModel, per LoRA shape and options; built once).

interface Programs { train: Map<string, Promise<{ info: ProgramInfo; session: Session }>>; score: Map<string, Promise<Session>> }
const programs = new WeakMap<AlignModel, Programs>();

function programsOf(m: AlignModel): Programs {
  let p = programs.get(m);
  if (p === undefined) {
    p = { train: new Map(), score: new Map() };
    programs.set(m, p);
  }
  return p;
}

function memo<T>(map: Map<string, Promise<T>>, key: string, make: () => Promise<T>): Promise<T> {
  let hit = map.get(key);
  if (hit === undefined) {
    hit = make();
    map.set(key, hit);
    hit.catch(() => map.delete(key));
  }
  return hit;
}

function trainSession(m: AlignModel, lora: LoraConfig, k: RewardModelKnobs): Promise<{ info: ProgramInfo; session: Session }> {
  const key = JSON.stringify([loraShapeKey(lora), lora.loraDropout, k.pooling, k.centering, k.weightDecay, k.maxGradNorm]);
  return memo(programsOf(m).train, key, async () => {
    const { g, base } = m.model.trainGraph('reward_model_bt');
    const lv = declareLora(g, m.model.spec, lora, 'param', 'float32', { training: true });
    const score = param(g, SCORE_WEIGHT, 'float32', [1, m.model.spec.hiddenSize]);
    const rewards = buildRewards(base, lv, score, rewardInputs(g), k.pooling);
    const bt = btLosses(rewards, input(g, 'chosen_index', 'int64', ['pairs']), input(g, 'rejected_index', 'int64', ['pairs']),
      input(g, 'margin', 'float32', ['pairs']), k.centering);
    const params = [...[...lv.pairs.values()].flatMap((x) => [x.a, x.b]), score];
    const info = trainProgram({ loss: O.meanAll(bt.perPair), params, optimizer: { weightDecay: k.weightDecay, maxGradNorm: k.maxGradNorm } });
    return { info, session: await createSession(toOnnx(info.graph), m.model.runtime) };
  });
}

function scoreSession(m: AlignModel, lora: LoraConfig, pooling: Pooling): Promise<Session> {
  return memo(programsOf(m).score, JSON.stringify([loraShapeKey(lora), pooling]), async () => {
    const { g, base } = m.model.trainGraph('reward_model_score', 'float32', 'fused'); // forward only
    const lv = declareLora(g, m.model.spec, lora, 'input', 'float32');
    const score = input(g, SCORE_WEIGHT, 'float32', [1, m.model.spec.hiddenSize]);
    output(buildRewards(base, lv, score, rewardInputs(g), pooling), 'rewards');
    return createSession(toOnnx(g), m.model.runtime);
  });
}

// ---------------------------------------------------------------------------------------------
// Batches.

/** 1 at the response tokens of a packed batch (the positions whose token a target_mask entry predicts). */
export function responseMask(b: LogProbBatch): Float32Array {
  const out = new Float32Array(b.batch * b.length);
  for (let r = 0; r < b.batch; r++) for (let t = 1; t < b.length; t++) out[r * b.length + t] = b.targetMask[r * b.length + t - 1]!;
  return out;
}

export function rewardFeeds(b: LogProbBatch): Record<string, ort.Tensor> {
  const dims = [b.batch, b.length];
  return {
    input_ids: i64(dims, b.inputIds), attention_mask: new ort.Tensor('float32', b.attentionMask, dims),
    [RESPONSE_MASK]: new ort.Tensor('float32', responseMask(b), dims),
  };
}

interface PairTokens { chosen: PromptResponseTokens; rejected: PromptResponseTokens; margin: number }

/** The preferences in `exs` as the heads read them (asPairs: pairs, then binary votes up-over-down), tokenized. */
function tokenizePairs(m: AlignModel, exs: Example[]): PairTokens[] {
  const tok = m.ckpt.tokenizer;
  if (tok === null) throw new AligndError('MODEL_INVALID', 'the base model has no tokenizer.json', { input: m.ckpt.dir, action: 'copy the model\'s tokenizer files into its directory' });
  return asPairs(exs).map((p) => ({ chosen: tok.promptResponse(p.prompt, p.chosen), rejected: tok.promptResponse(p.rejectedPrompt ?? p.prompt, p.rejected), margin: p.margin }));
}

// ---------------------------------------------------------------------------------------------
// Members: init, scoring, training.

export function rewardLoraConfig(k: Pick<RewardModelKnobs, 'lora'>): LoraConfig {
  return { r: k.lora.r, loraAlpha: k.lora.alpha, targetModules: [...k.lora.targetModules], loraDropout: k.lora.dropout, useRslora: false, baseModelNameOrPath: null };
}

/** A fresh member: PEFT's LoRA init (B = 0: the frozen base's features) and a head w ~ N(0, 1/H). */
export function freshMember(spec: ModelSpec, lora: LoraConfig, seed: number): RewardMember {
  const rng: Rng = createRng(seed * 7919 + 17);
  const H = spec.hiddenSize;
  return { adapter: initLora(spec, lora, seed), score: Float32Array.from({ length: H }, () => rng.normal() / Math.sqrt(H)), offset: 0, scale: 1 };
}

/** Training pairs a member's scale is fitted on (a deterministic sample of the round's; bounds the extra scoring pass). */
export const SCALE_FIT_PAIRS = 256;

/**
 * A member's common scale from its raw rewards of training pairs (chosen[i] preferred to
 * rejected[i]): offset = the mean reward, scale = argmin_a Σ log(1 + exp(−a·(r⁺ᵢ − r⁻ᵢ))) + a²/200
 * over a ≥ 0 (Platt scaling without intercept; the weak penalty keeps a finite when the pairs are
 * separable). Newton's method on a convex function of one variable.
 */
export function fitMemberScale(chosen: ArrayLike<number>, rejected: ArrayLike<number>): { offset: number; scale: number } {
  const n = chosen.length;
  if (n === 0) return { offset: 0, scale: 1 };
  let sum = 0;
  for (let i = 0; i < n; i++) sum += chosen[i]! + rejected[i]!;
  const offset = sum / (2 * n);
  const d = Array.from({ length: n }, (_, i) => chosen[i]! - rejected[i]!);
  let a = 1;
  for (let it = 0; it < 100; it++) {
    let g = a / 100;
    let h = 1 / 100;
    for (const x of d) {
      const p = 1 / (1 + Math.exp(-a * x)); // σ(a·x)
      g -= (1 - p) * x;
      h += p * (1 - p) * x * x;
    }
    const next = Math.max(0, a - g / h);
    const done = Math.abs(next - a) < 1e-9 * Math.max(1, a);
    a = next;
    if (done) break;
  }
  return { offset, scale: a };
}

/** One member's raw rewards w · pool(h) of packed sequences, in chunks. */
async function memberRewards(m: AlignModel, rm: Pick<RewardModel, 'lora' | 'pooling'>, member: RewardMember, seqs: PromptResponseTokens[], maxLength: number, chunk = 32): Promise<Float32Array> {
  const session = await scoreSession(m, rm.lora, rm.pooling);
  const out = new Float32Array(seqs.length);
  const limit = Math.min(maxLength, m.model.spec.maxPositions);
  const head = f32([1, member.score.length], member.score);
  const lf = loraFeeds(member.adapter);
  for (let i = 0; i < seqs.length; i += chunk) {
    const b = packLogProbBatch(seqs.slice(i, i + chunk), m.model.padId, limit);
    const r = await run(session, { ...rewardFeeds(b), ...lf, [SCORE_WEIGHT]: head });
    out.set(r['rewards']!.data as Float32Array, i);
  }
  return out;
}

/** Member rewards [n, K] (row-major) of sequences, each on its common scale. */
async function memberScores(m: AlignModel, rm: RewardModel, seqs: PromptResponseTokens[], maxLength: number): Promise<Float32Array> {
  const K = rm.members.length;
  const out = new Float32Array(seqs.length * K);
  for (let j = 0; j < K; j++) {
    const member = rm.members[j]!;
    const r = await memberRewards(m, rm, member, seqs, maxLength);
    for (let i = 0; i < seqs.length; i++) out[i * K + j] = member.scale * (r[i]! - member.offset);
  }
  return out;
}

/** Score (prompt, response) pairs: ensemble mean, std and members per response. */
export async function scoreWithRewardModel(m: AlignModel, rm: RewardModel, prompts: readonly Prompt[], responses: readonly string[],
  maxLength = DEFAULT_REWARD_MODEL_KNOBS.maxLength): Promise<RewardScore[]> {
  if (prompts.length === 0) return [];
  const tok = m.ckpt.tokenizer!;
  const seqs = prompts.map((p, i) => tok.promptResponse(p, responses[i]!));
  return summarise(await memberScores(m, rm, seqs, maxLength), seqs.length, rm.members.length);
}

/** The gate's RewardScorer backed by the reward model. */
export function rewardModelScorer(m: AlignModel, rm: RewardModel, maxLength = DEFAULT_REWARD_MODEL_KNOBS.maxLength): RewardScorer {
  return { score: (prompts, responses) => scoreWithRewardModel(m, rm, prompts, responses, maxLength) };
}

/** Held-out ranking of pairs: ensemble-mean accuracy, ECE, spread, per-member accuracy. */
export async function evaluatePairs(m: AlignModel, rm: RewardModel, pairs: Example[], maxLength: number): Promise<Pick<RewardModelMetrics,
  'heldoutPairs' | 'heldoutCorrect' | 'heldoutAccuracy' | 'ece' | 'heldoutSpread' | 'memberAccuracy'>> {
  const toks = tokenizePairs(m, pairs);
  const n = toks.length;
  const K = rm.members.length;
  if (n === 0) return { heldoutPairs: 0, heldoutCorrect: 0, heldoutAccuracy: null, ece: null, heldoutSpread: null, memberAccuracy: [] };
  const s = summarise(await memberScores(m, rm, toks.flatMap((p) => [p.chosen, p.rejected]), maxLength), 2 * n, K);
  const p = toks.map((_, i) => 1 / (1 + Math.exp(-(s[2 * i]!.mean - s[2 * i + 1]!.mean))));
  const correct = toks.filter((_, i) => s[2 * i]!.mean > s[2 * i + 1]!.mean).length;
  const memberAccuracy = Array.from({ length: K }, (_, j) => toks.filter((_, i) => s[2 * i]!.members[j]! > s[2 * i + 1]!.members[j]!).length / n);
  return {
    heldoutPairs: n, heldoutCorrect: correct, heldoutAccuracy: correct / n, ece: expectedCalibrationError(p, p.map(() => true)),
    heldoutSpread: s.reduce((a, x) => a + x.std, 0) / s.length, memberAccuracy,
  };
}

function memberState(member: RewardMember) {
  return initState({ ...loraHostTensors(member.adapter), [SCORE_WEIGHT]: { dtype: 'float32', dims: [1, member.score.length], data: member.score.slice() } });
}

/**
 * Train one member on `order` (indices into `pairs`, already resampled), `batchSize` pairs a step;
 * returns the member after training and the mean loss of its steps.
 */
async function trainMember(m: AlignModel, start: RewardMember, lora: LoraConfig, pairs: PairTokens[], order: number[], k: RewardModelKnobs,
  signal?: AbortSignal): Promise<{ member: RewardMember; loss: number; steps: number }> {
  const prog = await trainSession(m, lora, k);
  const state = memberState(start);
  const steps = Math.ceil(order.length / k.batchSize);
  const total = k.maxSteps > 0 ? Math.min(k.maxSteps, steps) : steps;
  const limit = Math.min(k.maxLength, m.model.spec.maxPositions);
  let lossSum = 0;
  for (let s = 0; s < total; s++) {
    if (signal?.aborted === true) throw new AligndError('ROUND_ABANDONED', `reward-model training abandoned at step ${s}: shutting down`, { action: 'none: the round is redone after the restart' });
    const rows = order.slice(s * k.batchSize, (s + 1) * k.batchSize).map((i) => pairs[i]!);
    const P = rows.length;
    const b = packLogProbBatch([...rows.map((r) => r.chosen), ...rows.map((r) => r.rejected)], m.model.padId, limit);
    const feeds = {
      ...rewardFeeds(b), chosen_index: i64([P], rows.map((_, i) => i)), rejected_index: i64([P], rows.map((_, i) => P + i)),
      margin: f32([P], rows.map((r) => r.margin)),
    };
    const lr = learningRate(s, total, k.learningRate, 'cosine', Math.floor(0.1 * total));
    lossSum += (await trainStep(prog.session, prog.info, state, feeds, lr)).loss;
  }
  const adapter = adapterFromTensors(start.adapter, state.params);
  const score = Float32Array.from(state.params[SCORE_WEIGHT]!.data as Float32Array);
  const diverged = () => new AligndError('TRAINING_DIVERGED', 'reward-model member values are not finite after training', { action: 'lower the reward model\'s learning rate; the previous reward model stays in use' });
  if (!score.every(Number.isFinite) || [...adapter.pairs.values()].some((p) => !p.a.every(Number.isFinite) || !p.b.every(Number.isFinite))) throw diverged();
  // Its common scale, on (a sample of) the training pairs it was trained from.
  const fit = pairs.length <= SCALE_FIT_PAIRS ? pairs : Array.from({ length: SCALE_FIT_PAIRS }, (_, i) => pairs[Math.floor((i * pairs.length) / SCALE_FIT_PAIRS)]!);
  const raw = await memberRewards(m, { lora, pooling: k.pooling }, { adapter, score, offset: 0, scale: 1 }, [...fit.map((p) => p.chosen), ...fit.map((p) => p.rejected)], k.maxLength);
  const { offset, scale } = fitMemberScale(raw.subarray(0, fit.length), raw.subarray(fit.length));
  if (!Number.isFinite(offset) || !Number.isFinite(scale)) throw diverged();
  return { member: { adapter, score, offset, scale }, loss: total === 0 ? NaN : lossSum / total, steps: total };
}

/** A bootstrap resample of 0..n−1 (n draws with replacement), or a shuffle when `bootstrap` is false. */
function resample(n: number, rng: Rng, bootstrap: boolean): number[] {
  if (bootstrap) return Array.from({ length: n }, () => Math.floor(rng.next() * n));
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

export const rewardModelName = (rm: Pick<RewardModel, 'members' | 'pooling' | 'lora'>): string =>
  `bt-lora-r${rm.lora.r}-${rm.pooling}-x${rm.members.length}`;

/**
 * Train (warm-started from `previous` when its shape matches the knobs) on the window's training
 * preferences (asPairs: pairs, and binary votes up-over-down) — held-out examples are dropped here
 * whatever the caller passes — and measure on `heldout`'s.
 */
export async function trainRewardModel(inp: {
  model: AlignModel; window: Example[]; heldout: Example[]; previous?: RewardModel | null; knobs?: Partial<RewardModelKnobs>; signal?: AbortSignal;
}): Promise<{ rewardModel: RewardModel; metrics: RewardModelMetrics }> {
  const k = { ...DEFAULT_REWARD_MODEL_KNOBS, ...inp.knobs };
  if (!(Number.isInteger(k.members) && k.members >= 1)) throw new AligndError('CONFIG_INVALID', `reward model members must be a positive integer, got ${k.members}`);
  const m = inp.model;
  const lora = rewardLoraConfig(k);
  const prev = inp.previous ?? null;
  const compatible = prev !== null && prev.pooling === k.pooling && prev.members.length === k.members && loraShapeKey(prev.lora) === loraShapeKey(lora);
  const starts = compatible ? prev.members : Array.from({ length: k.members }, (_, j) => freshMember(m.model.spec, lora, k.seed * 1000 + j + 1));
  const pairs = tokenizePairs(m, inp.window.filter((e) => !e.heldout));
  const members: RewardMember[] = [];
  let loss = 0;
  let stepsPerMember = 0;
  for (let j = 0; j < k.members; j++) {
    if (pairs.length === 0) { members.push(starts[j]!); continue; }
    // Each member: its own resample per epoch (the whole data when K = 1).
    const rng = createRng(k.seed * 104729 + j * 7 + 3);
    const order = Array.from({ length: Math.max(1, Math.round(k.epochs)) }, () => resample(pairs.length, rng, k.members > 1)).flat();
    const r = await trainMember(m, starts[j]!, lora, pairs, order, k, inp.signal);
    members.push(r.member);
    loss += r.loss / k.members;
    stepsPerMember = r.steps;
  }
  const rewardModel: RewardModel = { pooling: k.pooling, lora, members };
  const ev = await evaluatePairs(m, rewardModel, inp.heldout.filter((e) => e.heldout), k.maxLength);
  return { rewardModel, metrics: { name: rewardModelName(rewardModel), pairs: pairs.length, stepsPerMember, loss: pairs.length === 0 ? NaN : loss, ...ev } };
}

// ---------------------------------------------------------------------------------------------
// Persistence: one safetensors file, members' LoRA tensors under PEFT names with a member prefix.

const FORMAT = 'alignd.reward_model/v1';
/** [offset, scale] per member; a file written before members had a common scale lacks it (identity until the next round fits one). */
const SCALE = 'scale.offset_scale';
const memberKey = (j: number, name: string): string => `members.${j}.${name}`;

export function saveRewardModel(path: string, rm: RewardModel): void {
  const tensors: Record<string, ReturnType<typeof fromFloat32>> = {};
  rm.members.forEach((mem, j) => {
    for (const [p, pair] of mem.adapter.pairs) {
      tensors[memberKey(j, peftKey(p, 'A'))] = fromFloat32(pair.a, [rm.lora.r, pair.module.inFeatures]);
      tensors[memberKey(j, peftKey(p, 'B'))] = fromFloat32(pair.b, [pair.module.outFeatures, rm.lora.r]);
    }
    tensors[memberKey(j, SCORE_WEIGHT)] = fromFloat32(mem.score, [1, mem.score.length]);
    tensors[memberKey(j, SCALE)] = fromFloat32(Float32Array.of(mem.offset, mem.scale), [2]);
  });
  writeSafetensors(path, tensors, {
    format: FORMAT, members: String(rm.members.length), pooling: rm.pooling,
    lora: JSON.stringify({ r: rm.lora.r, lora_alpha: rm.lora.loraAlpha, target_modules: rm.lora.targetModules, lora_dropout: rm.lora.loraDropout, use_rslora: rm.lora.useRslora }),
  });
}

/** Load a reward model saved by saveRewardModel for a model of `spec`; anything missing or misshapen is an error naming the file. */
export function loadRewardModel(path: string, spec: ModelSpec): RewardModel {
  const c = readSafetensors(path);
  const bad = (why: string): AligndError => new AligndError('MODEL_INVALID', `reward model file: ${why}`, { input: path, action: 'delete the file: the next round retrains the reward model' });
  const meta: Record<string, string> = c.metadata ?? {};
  if (meta['format'] !== FORMAT) throw bad(`format is ${meta['format'] ?? 'missing'}, expected ${FORMAT}`);
  const K = Number(meta['members']);
  const pooling = meta['pooling'];
  if (!(Number.isInteger(K) && K >= 1) || (pooling !== 'last' && pooling !== 'mean')) throw bad(`members ${meta['members']} / pooling ${pooling} invalid`);
  let lc: { r: number; lora_alpha: number; target_modules: string[]; lora_dropout: number; use_rslora: boolean };
  try { lc = JSON.parse(meta['lora'] ?? ''); } catch { throw bad('lora metadata is not JSON'); }
  const lora: LoraConfig = { r: lc.r, loraAlpha: lc.lora_alpha, targetModules: lc.target_modules, loraDropout: lc.lora_dropout, useRslora: lc.use_rslora, baseModelNameOrPath: null };
  const like = initLora(spec, lora, 0);
  const get = (name: string, n: number): Float32Array => {
    const t = c.tensors.get(name);
    if (t === undefined) throw bad(`lacks tensor ${name}`);
    const v = toFloat32(t);
    if (v.length !== n) throw bad(`tensor ${name} has ${v.length} values, expected ${n}`);
    return v;
  };
  const members = Array.from({ length: K }, (_, j) => {
    const pairs = new Map([...like.pairs].map(([p, pair]) => [p, {
      module: pair.module, a: get(memberKey(j, peftKey(p, 'A')), pair.a.length), b: get(memberKey(j, peftKey(p, 'B')), pair.b.length),
    }]));
    const [offset, scale] = c.tensors.has(memberKey(j, SCALE)) ? get(memberKey(j, SCALE), 2) : [0, 1];
    return { adapter: { config: lora, pairs }, score: get(memberKey(j, SCORE_WEIGHT), spec.hiddenSize), offset: offset!, scale: scale! };
  });
  return { pooling, lora, members };
}
