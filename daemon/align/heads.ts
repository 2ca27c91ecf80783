/**
 * Ensembles of K linear heads on frozen features (the base model's last-token hidden state),
 * trained together in one engine program: head k sees example i with bootstrap multiplicity
 * w[i, k] ~ Multinomial(n, 1/n) (Efron 1979), so members differ by data as well as by their
 * random init — the disagreement that makes the spread an uncertainty (Lakshminarayanan et al.
 * 2017; for reward models Coste et al. 2023). Features are standardised with the statistics of
 * the first training set and keep them across warm-started rounds.
 *
 *   kind 'bt'  (reward): −log σ(r⁺ − r⁻ − m) + c·(r⁺ + r⁻)²  (Bradley–Terry; centering as
 *              Eisenstein et al. 2023, TRL RewardTrainer `center_rewards_coefficient`);
 *   kind 'bce' (safety): −[y log σ(z) + (1 − y) log σ(−z)].
 */
import * as ort from 'onnxruntime-node';
import { type Session, createSession, f32, graph, initState, input, ops as O, param, toOnnx, trainProgram, trainStep } from '../engine/index.js';
import { AligndError } from '../base/errors.js';
import { createRng } from '../base/random.js';
import { fromFloat32, readSafetensors, toFloat32, writeSafetensors } from '../model/safetensors.js';
import { logSigmoid } from './losses.js';

export interface HeadEnsemble {
  k: number;
  hidden: number;
  /** [K, H] row-major. */
  w: Float32Array;
  /** [K]. */
  b: Float32Array;
  /** Feature standardisation, [H] each. */
  mu: Float32Array;
  sigma: Float32Array;
}

export interface HeadTrainOptions {
  k: number;
  steps: number;
  learningRate: number;
  weightDecay: number;
  seed: number;
  /** BT reward centering coefficient c. */
  centering?: number;
}

export function standardiser(feats: Float32Array, n: number, H: number): { mu: Float32Array; sigma: Float32Array } {
  const mu = new Float32Array(H);
  const sigma = new Float32Array(H);
  for (let i = 0; i < n; i++) for (let h = 0; h < H; h++) mu[h] = mu[h]! + feats[i * H + h]! / n;
  for (let i = 0; i < n; i++) for (let h = 0; h < H; h++) sigma[h] = sigma[h]! + (feats[i * H + h]! - mu[h]!) ** 2 / n;
  for (let h = 0; h < H; h++) sigma[h] = Math.sqrt(sigma[h]!) + 1e-6;
  return { mu, sigma };
}

export function standardise(e: Pick<HeadEnsemble, 'mu' | 'sigma' | 'hidden'>, feats: Float32Array): Float32Array {
  const H = e.hidden;
  const out = new Float32Array(feats.length);
  for (let i = 0; i < feats.length; i++) out[i] = (feats[i]! - e.mu[i % H]!) / e.sigma[i % H]!;
  return out;
}

export function freshHeads(k: number, H: number, seed: number, mu: Float32Array, sigma: Float32Array): HeadEnsemble {
  const rng = createRng(seed);
  // Init scale 1/√H: members start on independent random directions, which training only
  // constrains along the directions the data spans.
  const w = Float32Array.from({ length: k * H }, () => rng.normal() / Math.sqrt(H));
  return { k, hidden: H, w, b: new Float32Array(k), mu, sigma };
}

/** Bootstrap multiplicities [n, K]: each member draws n examples with replacement. */
export function bootstrapWeights(n: number, k: number, seed: number): Float32Array {
  const rng = createRng(seed);
  const w = new Float32Array(n * k);
  for (let j = 0; j < k; j++) for (let i = 0; i < n; i++) {
    const pick = Math.floor(rng.next() * n);
    w[pick * k + j] = w[pick * k + j]! + 1;
  }
  return w;
}

/** Member scores [n, K] of standardised features [n, H]. */
export function headScores(e: HeadEnsemble, z: Float32Array, n: number): Float32Array {
  const { k, hidden: H } = e;
  const out = new Float32Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) {
    let s = e.b[j]!;
    for (let h = 0; h < H; h++) s += z[i * H + h]! * e.w[j * H + h]!;
    out[i * k + j] = s;
  }
  return out;
}

const sessions = new Map<string, Promise<{ session: Session; info: ReturnType<typeof trainProgram> }>>();

function program(kind: 'bt' | 'bce', k: number, H: number, o: HeadTrainOptions) {
  const key = JSON.stringify([kind, k, H, o.weightDecay, o.centering ?? 0]);
  let hit = sessions.get(key);
  if (hit === undefined) {
    hit = (async () => {
      const g = graph(`heads_${kind}`);
      const w = param(g, 'w', 'float32', [k, H]);
      const b = param(g, 'b', 'float32', [k]);
      const weights = input(g, 'weights', 'float32', ['n', k]);
      const n = O.max(O.reduceSum(O.reduceSum(weights, [0], false), [0], false), 1);
      const score = (x: ReturnType<typeof input>) => O.add(O.matmul(x, O.transpose(w, [1, 0])), b);
      let perEx;
      if (kind === 'bt') {
        const rc = score(input(g, 'chosen', 'float32', ['n', H]));
        const rr = score(input(g, 'rejected', 'float32', ['n', H]));
        const margin = O.unsqueeze(input(g, 'margin', 'float32', ['n']), [1]);
        const sum = O.add(rc, rr);
        perEx = O.add(O.neg(logSigmoid(O.sub(O.sub(rc, rr), margin))), O.mul(O.mul(sum, sum), o.centering ?? 0));
      } else {
        const z = score(input(g, 'x', 'float32', ['n', H]));
        const y = O.unsqueeze(input(g, 'y', 'float32', ['n']), [1]);
        perEx = O.neg(O.add(O.mul(y, logSigmoid(z)), O.mul(O.sub(1, y), logSigmoid(O.neg(z)))));
      }
      // Σ_k Σ_i w_ik ℓ_ik / n_k-ish: each member's weighted mean (weights sum to n per member).
      const loss = O.div(O.sumAll(O.mul(perEx, weights)), O.div(n, k));
      const info = trainProgram({ loss, params: [w, b], optimizer: { weightDecay: o.weightDecay } });
      return { info, session: await createSession(toOnnx(g), { threads: 2 }) };
    })();
    sessions.set(key, hit);
  }
  return hit;
}

/**
 * Train (or continue training) an ensemble, full batch, `o.steps` AdamW steps. `data` holds the
 * standardised features: for 'bt' {chosen, rejected, margin}, for 'bce' {x, y}; n examples.
 * Returns the updated ensemble and the last loss.
 */
export async function trainHeads(kind: 'bt' | 'bce', start: HeadEnsemble, data: Record<string, Float32Array>, n: number,
  o: HeadTrainOptions): Promise<{ ensemble: HeadEnsemble; loss: number }> {
  const { k, hidden: H } = start;
  const p = await program(kind, k, H, o);
  const state = initState({ w: { dtype: 'float32', dims: [k, H], data: start.w.slice() }, b: { dtype: 'float32', dims: [k], data: start.b.slice() } });
  const feeds: Record<string, ort.Tensor> = { weights: f32([n, k], bootstrapWeights(n, k, o.seed)) };
  for (const [name, v] of Object.entries(data)) feeds[name] = f32(name === 'margin' || name === 'y' ? [n] : [n, H], v);
  let loss = NaN;
  for (let s = 0; s < o.steps; s++) loss = (await trainStep(p.session, p.info, state, feeds, o.learningRate)).loss;
  return {
    ensemble: { ...start, w: Float32Array.from(state.params['w']!.data as Float32Array), b: Float32Array.from(state.params['b']!.data as Float32Array) },
    loss,
  };
}

/** Expected calibration error (Guo et al. 2017, eq. 3) of binary predictions p against outcomes. */
export function expectedCalibrationError(p: number[], outcome: boolean[], bins = 10): number {
  const n = p.length;
  if (n === 0) return 0;
  let ece = 0;
  for (let bi = 0; bi < bins; bi++) {
    const idx = p.map((_, i) => i).filter((i) => {
      const conf = Math.max(p[i]!, 1 - p[i]!);
      const lo = 0.5 + (0.5 * bi) / bins;
      const hi = 0.5 + (0.5 * (bi + 1)) / bins;
      return conf >= lo && (conf < hi || (bi === bins - 1 && conf <= hi));
    });
    if (idx.length === 0) continue;
    const conf = idx.reduce((s, i) => s + Math.max(p[i]!, 1 - p[i]!), 0) / idx.length;
    const acc = idx.reduce((s, i) => s + ((p[i]! >= 0.5) === outcome[i]! ? 1 : 0), 0) / idx.length;
    ece += (idx.length / n) * Math.abs(acc - conf);
  }
  return ece;
}

/** Save an ensemble as one safetensors file (w, b, mu, sigma; K and H in the metadata). */
export function saveHeads(path: string, e: HeadEnsemble, kind: 'reward' | 'safety'): void {
  writeSafetensors(path, {
    w: fromFloat32(e.w, [e.k, e.hidden]), b: fromFloat32(e.b, [e.k]), mu: fromFloat32(e.mu, [e.hidden]), sigma: fromFloat32(e.sigma, [e.hidden]),
  }, { format: 'alignd.heads/v1', kind, k: String(e.k), hidden: String(e.hidden) });
}

/** Load an ensemble saved by saveHeads; a missing tensor or a shape that disagrees is an error naming the file. */
export function loadHeads(path: string): HeadEnsemble {
  const c = readSafetensors(path);
  const get = (name: string): { v: Float32Array; shape: number[] } => {
    const t = c.tensors.get(name);
    if (t === undefined) throw new AligndError('MODEL_INVALID', `head ensemble file lacks tensor ${name}`, { input: path, action: 'retrain the ensemble (delete the file)' });
    return { v: toFloat32(t), shape: t.shape };
  };
  const w = get('w');
  const [k, H] = w.shape as [number, number];
  const b = get('b'), mu = get('mu'), sigma = get('sigma');
  if (b.v.length !== k || mu.v.length !== H || sigma.v.length !== H) {
    throw new AligndError('MODEL_INVALID', `head ensemble tensors disagree on K=${k}, H=${H}`, { input: path, action: 'retrain the ensemble (delete the file)' });
  }
  return { k, hidden: H, w: w.v, b: b.v, mu: mu.v, sigma: sigma.v };
}
