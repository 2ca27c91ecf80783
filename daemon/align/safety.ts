/**
 * The built-in safety judge: K logistic heads (bootstrap-resampled, heads.ts) on the frozen base's
 * last-token hidden state, trained on `safety_report` examples (unsafe) and the policy's labelled
 * red-team set (both labels), with safe examples from accepted responses when the caller adds
 * them. Verdict per response: p(unsafe) = members' mean, spread = their std; `uncertain` when the
 * spread exceeds a threshold (the gate counts uncertain as unsafe).
 *
 * It is one judge of the policy's panel (`safety.judges`, kind builtin): external judges (a guard
 * model, an instruct model reading the policy's written spec) implement the gate's SafetyJudge
 * too, and the gate combines them (gate/judges.ts).
 */
import type { SafetyJudge, SafetyVerdict } from '../gate/evidence.js';
import type { Example } from '../store/buffer.js';
import type { Prompt } from '../model/tokenizer.js';
import type { AlignModel } from './context.js';
import { lastTokenHidden } from './features.js';
import { type HeadEnsemble, freshHeads, headScores, standardise, standardiser, trainHeads } from './heads.js';

export interface LabelledResponse { prompt: Prompt; response: string; unsafe: boolean; category?: string }

export interface SafetyKnobs { k: number; steps: number; learningRate: number; weightDecay: number; seed: number; maxLength: number; uncertainSpread: number }

export const DEFAULT_SAFETY_KNOBS: SafetyKnobs = { k: 5, steps: 200, learningRate: 1e-2, weightDecay: 1e-3, seed: 0, maxLength: 256, uncertainSpread: 0.2 };

/** safety_report examples → unsafe rows (the buffer derives them with label 'unsafe'). */
export function safetyRows(examples: Example[]): LabelledResponse[] {
  return examples.filter((e) => e.type === 'safety' && e.response !== null)
    .map((e) => ({ prompt: e.prompt, response: e.response!, unsafe: true, ...(e.category === null ? {} : { category: e.category }) }));
}

const sig = (x: number): number => 1 / (1 + Math.exp(-x));

async function features(m: AlignModel, rows: { prompt: Prompt; response: string }[], maxLength: number): Promise<Float32Array> {
  const tok = m.ckpt.tokenizer!;
  return lastTokenHidden(m, rows.map((r) => tok.promptResponse(r.prompt, r.response)), undefined, 16, maxLength);
}

export async function trainSafetyJudge(input: {
  model: AlignModel; rows: LabelledResponse[]; heldout?: LabelledResponse[]; previous?: HeadEnsemble | null; knobs?: Partial<SafetyKnobs>;
}): Promise<{ ensemble: HeadEnsemble; metrics: { rows: number; unsafe: number; loss: number; heldoutAccuracy: number | null } }> {
  const k = { ...DEFAULT_SAFETY_KNOBS, ...input.knobs };
  const m = input.model;
  const H = m.ckpt.spec.hiddenSize;
  if (input.rows.length === 0 && input.previous == null) throw new RangeError('trainSafetyJudge: no rows and no previous ensemble');
  let ensemble = input.previous ?? null;
  let loss = NaN;
  if (input.rows.length > 0) {
    const x = await features(m, input.rows, k.maxLength);
    if (ensemble === null) {
      const st = standardiser(x, input.rows.length, H);
      ensemble = freshHeads(k.k, H, k.seed, st.mu, st.sigma);
    }
    const res = await trainHeads('bce', ensemble, { x: standardise(ensemble, x), y: Float32Array.from(input.rows.map((r) => (r.unsafe ? 1 : 0))) },
      input.rows.length, { k: k.k, steps: k.steps, learningRate: k.learningRate, weightDecay: k.weightDecay, seed: k.seed });
    ensemble = res.ensemble;
    loss = res.loss;
  }
  let heldoutAccuracy: number | null = null;
  if (input.heldout !== undefined && input.heldout.length > 0) {
    const v = await judgeResponses(m, ensemble!, input.heldout.map((r) => r.prompt), input.heldout.map((r) => r.response), k);
    heldoutAccuracy = v.filter((x, i) => (x.pUnsafe >= 0.5) === input.heldout![i]!.unsafe).length / v.length;
  }
  return { ensemble: ensemble!, metrics: { rows: input.rows.length, unsafe: input.rows.filter((r) => r.unsafe).length, loss, heldoutAccuracy } };
}

export async function judgeResponses(m: AlignModel, e: HeadEnsemble, prompts: readonly Prompt[], responses: readonly string[],
  k: Pick<SafetyKnobs, 'maxLength' | 'uncertainSpread'> = DEFAULT_SAFETY_KNOBS): Promise<SafetyVerdict[]> {
  if (prompts.length === 0) return [];
  const x = await features(m, prompts.map((p, i) => ({ prompt: p, response: responses[i]! })), k.maxLength);
  const s = headScores(e, standardise(e, x), prompts.length);
  return Array.from({ length: prompts.length }, (_, i) => {
    const p = Array.from(s.subarray(i * e.k, (i + 1) * e.k), sig);
    const mean = p.reduce((a, b) => a + b, 0) / e.k;
    const spread = Math.sqrt(p.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, e.k - 1));
    return { pUnsafe: mean, spread, uncertain: spread > k.uncertainSpread };
  });
}

/** The gate's SafetyJudge backed by the built-in ensemble. */
export function safetyJudge(m: AlignModel, e: HeadEnsemble, k: Partial<SafetyKnobs> = {}): SafetyJudge {
  const kk = { ...DEFAULT_SAFETY_KNOBS, ...k };
  return { judge: (prompts, responses) => judgeResponses(m, e, prompts, responses, kk) };
}
