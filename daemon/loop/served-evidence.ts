/**
 * Gate evidence from the serving engine (policy `evaluation.engine: serving`): held-out implicit-
 * reward margins from served prompt log-probs, probe answers from served completions, and a KL
 * figure from the returned top-k log-probs.
 *
 * What the KL figure is. At a response position the server returns, for the candidate π and the
 * deployed version π_ref, the top-k tokens of each with their log-probs (and the actual token's).
 * Let T be the tokens whose log-probs are known under both, R the rest of the vocabulary, and
 * P(R) = 1 − Σ_T π, Q(R) = 1 − Σ_T π_ref. Then
 *     KL_T = Σ_{v∈T} π(v) log(π(v)/π_ref(v)) + P(R) log(P(R)/Q(R))
 * is the exact KL between the two distributions coarsened to T ∪ {R}; by the log-sum inequality
 * (the data-processing inequality for the merge of R) KL_T ≤ KL(π‖π_ref) at every position. The
 * reported mean over response positions is therefore a LOWER BOUND of the guard's exact mean token
 * KL: it can show a round over budget, never prove one inside it. The budget itself is enforced
 * by the exact KL the training engine measured (the job's KL guard); this figure is the server's
 * independent check of it, reported beside it.
 */
import { errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import type { Example } from '../store/buffer.js';
import type { ModelTokenizer, PromptResponseTokens } from '../model/tokenizer.js';
import type { Responder } from '../gate/evidence.js';
import { heldoutPairRows } from './gate-inputs.js';
import { evalName, type PositionLogprobs, type Sampling, type ServingEngine } from '../registry/serving-engine.js';

/** KL_T of one position (see the header): ≤ the exact KL. */
export function coarsenedKl(p: PositionLogprobs, q: PositionLogprobs): number {
  const qMap = new Map(q.top);
  let kl = 0, pT = 0, qT = 0;
  for (const [v, lp] of p.top) {
    const lq = qMap.get(v);
    if (lq === undefined) continue;
    const pv = Math.exp(lp);
    kl += pv * (lp - lq);
    pT += pv;
    qT += Math.exp(lq);
  }
  const pR = Math.max(0, 1 - pT), qR = Math.max(1e-30, 1 - qT);
  if (pR > 0) kl += pR * Math.log(pR / qR);
  return Math.max(0, kl);
}

export interface ServedEvidence {
  /** β·[(log π(y⁺) − log π_ref(y⁺)) − (log π(y⁻) − log π_ref(y⁻))] per held-out pair. */
  margins: number[];
  /** Mean KL_T over the contexts' response positions (a lower bound of the exact token KL). */
  klLowerBound: number;
  positions: number;
  topK: number;
}

const responseSum = (lp: PositionLogprobs[], seq: PromptResponseTokens): number => {
  let s = 0;
  for (let t = Math.max(seq.promptLength, 1); t < seq.ids.length; t++) s += lp[t - 1]!.actual;
  return s;
};

export async function servedEvidence(engine: ServingEngine, o: {
  candidate: string; deployed: string; pairs: Array<{ chosen: PromptResponseTokens; rejected: PromptResponseTokens }>;
  contexts: PromptResponseTokens[]; beta: number; topK: number; signal?: AbortSignal;
}): Promise<ServedEvidence> {
  const lps = (model: string, seq: PromptResponseTokens, k: number): Promise<PositionLogprobs[]> => engine.promptLogprobs(model, seq.ids, k, o.signal);
  const margins: number[] = [];
  // One request at a time: vLLM 0.32's CPU engine core failed (HTTP 500, "EngineCore encountered an
  // issue") in a run that sent four prompt_logprobs requests at once, two on a runtime LoRA and two
  // on the base; the vLLM suite measured them one by one.
  for (const p of o.pairs) {
    const pc = await lps(o.candidate, p.chosen, 0);
    const pr = await lps(o.candidate, p.rejected, 0);
    const rc = await lps(o.deployed, p.chosen, 0);
    const rr = await lps(o.deployed, p.rejected, 0);
    margins.push(o.beta * ((responseSum(pc, p.chosen) - responseSum(rc, p.chosen)) - (responseSum(pr, p.rejected) - responseSum(rr, p.rejected))));
  }
  let sum = 0, positions = 0;
  for (const c of o.contexts) {
    const p = await lps(o.candidate, c, o.topK);
    const q = await lps(o.deployed, c, o.topK);
    for (let t = Math.max(c.promptLength, 1); t < c.ids.length; t++) {
      sum += coarsenedKl(p[t - 1]!, q[t - 1]!);
      positions++;
    }
  }
  return { margins, klLowerBound: positions === 0 ? 0 : sum / positions, positions, topK: o.topK };
}

/** A Responder answering through the server under `model` (the same sampling for both sides). */
export function servedResponder(engine: ServingEngine, model: string, sampling: Sampling, signal?: AbortSignal): Responder {
  return { respond: (prompts) => engine.complete(model, prompts, sampling, signal) };
}

/** What the gate is given when the serving engine evaluates (see trainAndGate). */
export interface ServingEvaluation {
  candidate: Responder;
  deployed: Responder;
  /** The anchor's answers, when an anchor was asked for (the gate's paired bounds against it). */
  anchor?: Responder;
  margins: number[];
  /** The held-out pairs the margins were measured on (the decision's evidence names their events). */
  used: Example[];
  served: ServedEvidence;
  /** Unload the private names (always called, whatever the gate did). */
  close(): Promise<void>;
}

/**
 * Load the candidate (and the deployed version, and the anchor when it is another version) under
 * private names, measure the evidence, and hand back responders on those names. With no deployed
 * version, the base (its served name) is the reference; an anchor of null is the base too.
 */
export async function servingEvaluation(engine: ServingEngine, o: {
  model: string; candidate: { version: string; adapterDir: string }; deployed: { version: string; adapterDir: string } | null; baseServedName: string;
  /** Absent: no anchor side; null: the base; else a version other than the deployed one. */
  anchor?: { version: string; adapterDir: string } | null;
  tokenizer: ModelTokenizer; heldout: Example[]; beta: number; topK: number; klContexts: number; sampling: Sampling; log: Logger; signal?: AbortSignal;
}): Promise<ServingEvaluation> {
  const cand = evalName(o.model, o.candidate.version);
  const dep = o.deployed === null ? o.baseServedName : evalName(o.model, o.deployed.version);
  const loaded: string[] = [];
  const close = async (): Promise<void> => {
    for (const n of loaded) {
      try { await engine.unload(n); } catch (err) { o.log.warn('unloading an evaluation adapter failed; it stays loaded until the server restarts', { name: n, err: errorMessage(err) }); }
    }
  };
  try {
    await engine.load(cand, o.candidate.adapterDir, o.signal);
    loaded.push(cand);
    if (o.deployed !== null) {
      await engine.load(dep, o.deployed.adapterDir, o.signal);
      loaded.push(dep);
    }
    const anc = o.anchor === undefined ? undefined : o.anchor === null ? o.baseServedName : evalName(o.model, o.anchor.version);
    if (o.anchor != null && anc !== undefined && !loaded.includes(anc)) {
      await engine.load(anc, o.anchor.adapterDir, o.signal);
      loaded.push(anc);
    }
    const tok = o.tokenizer;
    const rows = heldoutPairRows(o.heldout);
    const pairs = rows.map((e) => ({ chosen: tok.promptResponse(e.prompt, e.chosen!), rejected: tok.promptResponse(e.prompt, e.rejected!) }));
    const contexts = o.heldout.filter((e) => (e.chosen ?? e.response) !== null).slice(0, o.klContexts).map((e) => tok.promptResponse(e.prompt, (e.chosen ?? e.response)!));
    const served = await servedEvidence(engine, { candidate: cand, deployed: dep, pairs, contexts, beta: o.beta, topK: o.topK, ...(o.signal === undefined ? {} : { signal: o.signal }) });
    o.log.info('served evidence', { engine: engine.id, candidate: cand, deployed: dep, pairs: pairs.length, kl_lower_bound: served.klLowerBound, positions: served.positions, top_k: o.topK });
    return { candidate: servedResponder(engine, cand, o.sampling, o.signal), deployed: servedResponder(engine, dep, o.sampling, o.signal),
      ...(anc === undefined ? {} : { anchor: servedResponder(engine, anc, o.sampling, o.signal) }), margins: served.margins, used: rows, served, close };
  } catch (err) {
    await close();
    throw err;
  }
}
