/**
 * What a round hands the gate, all from the held-out split (sha256(event_id), fixed at insert;
 * never trained on): the candidate's implicit reward on held-out feedback, production probe
 * prompts from held-out events, held-out safety reports the judges are calibrated on, the
 * policy's judges (the reward scorer's held-out ranking is reward-signal.ts's) — and the ids of
 * every held-out event used, so the decision records where its evidence came from. Responders
 * generate every side's answers to the policy's `gate.max_new_tokens`.
 */
import type { Example } from '../store/buffer.js';
import type { Prompt } from '../feedback/schema.js';
import { errorMessage } from '../base/errors.js';
import { safetyJudge } from '../align/safety.js';
import { pairLogRatios, sequenceLogps } from '../align/policy-logps.js';
import type { AlignModel } from '../align/context.js';
import type { HeadEnsemble } from '../align/heads.js';
import type { LoraAdapter } from '../model/lora.js';
import type { LabelledExample, NamedJudge, Responder } from '../gate/evidence.js';
import { mapCategory } from '../gate/judges.js';
import { judgeName, type JudgeConfig, type Policy } from '../policy/schema.js';

/**
 * Held-out feedback the candidate's implicit reward is measured on (heldout_accuracy), newest
 * first: every one the round fetched (training-round.ts fetches 500). It was the newest 200, which
 * at late rounds' α_k cannot show 60% agreement above 50% (Clopper–Pearson); 500 can.
 */
export const HELDOUT_AGREEMENT_MAX = 500;

/** The held-out preference pairs the gate's evidence reads, newest first, at most HELDOUT_AGREEMENT_MAX. */
export function heldoutPairRows(heldout: readonly Example[]): Example[] {
  return heldout.filter((e) => e.type === 'pair' && e.chosen !== null && e.rejected !== null).slice(0, HELDOUT_AGREEMENT_MAX);
}

/** Sampling for the gate's responders: the same for every side. */
export const RESPOND = { temperature: 0.7, topP: 0.95, seed: 7 };

/** Gate prompts are strings; a chat prompt is represented by its last user message. */
export function promptText(p: Prompt): string {
  if (typeof p === 'string') return p;
  const users = p.filter((m) => m.role === 'user');
  return (users.at(-1) ?? p.at(-1))?.content ?? '';
}

/** The generation cap: the policy's, or less when the longest probe plus the cap would not fit the model's positions. */
export function effectiveMaxNewTokens(m: AlignModel, prompts: readonly string[], cap: number): number {
  const tok = m.ckpt.tokenizer!;
  const longest = prompts.reduce((x, p) => Math.max(x, tok.encodePrompt(p).length), 0);
  return Math.max(1, Math.min(cap, m.ckpt.spec.maxPositions - longest));
}

export function responder(m: AlignModel, adapter: LoraAdapter | null, maxNewTokens: number): Responder {
  return {
    async respond(prompts) {
      const out: Array<{ text: string; tokens: number }> = [];
      for (let i = 0; i < prompts.length; i += 16) {
        const chunk = prompts.slice(i, i + 16);
        const r = await m.model.generateText(chunk, { maxNewTokens, sampling: { temperature: RESPOND.temperature, topP: RESPOND.topP }, seed: RESPOND.seed + i }, adapter);
        out.push(...r.map((x) => ({ text: x.text, tokens: x.ids.length })));
      }
      return out;
    },
  };
}

/**
 * The candidate's implicit reward on held-out feedback (reference: the deployed version), signed
 * to agree with the label: pairs → β·[(log π − log π_ref)(chosen) − (…)(rejected)] (DPO's margin);
 * up/down votes → β·(log π − log π_ref)(y), negated for a down-vote (KTO's implicit reward).
 */
export async function heldoutAgreement(m: AlignModel, candidate: LoraAdapter, deployed: LoraAdapter | null, heldout: Example[], beta: number, kind: 'pairs' | 'binary'):
  Promise<{ margins: number[]; used: Example[] }> {
  const tok = m.ckpt.tokenizer!;
  if (kind === 'pairs') {
    const rows = heldoutPairRows(heldout);
    const tokens = rows.map((e) => ({ chosen: tok.promptResponse(e.prompt, e.chosen!), rejected: tok.promptResponse(e.prompt, e.rejected!) }));
    return { margins: (await pairLogRatios(m, candidate, deployed, tokens)).map((d) => beta * d), used: rows };
  }
  const rows = heldout.filter((e) => e.type === 'kto' && e.response !== null && (e.label === 'up' || e.label === 'down')).slice(0, HELDOUT_AGREEMENT_MAX);
  const seqs = rows.map((e) => tok.promptResponse(e.prompt, e.response!));
  const [pol, ref] = await Promise.all([sequenceLogps(m, candidate, seqs), sequenceLogps(m, deployed, seqs)]);
  return { margins: rows.map((e, i) => (e.label === 'up' ? 1 : -1) * beta * (pol[i]! - ref[i]!)), used: rows };
}

/** Distinct prompts of held-out events, newest first (the examples come newest first). */
export function heldoutPrompts(heldout: Example[], limit: number): { prompts: string[]; used: Example[] } {
  const seen = new Set<string>();
  const used: Example[] = [];
  for (const e of heldout) {
    if (used.length >= limit) break;
    const p = promptText(e.prompt);
    if (p === '' || seen.has(p)) continue;
    seen.add(p);
    used.push(e);
  }
  return { prompts: used.map((e) => promptText(e.prompt)), used };
}

export type ExternalJudgeConfig = Exclude<JudgeConfig, { kind: 'builtin' }>;

/** The policy's judges, in its order: the built-in heads (when listed) and the external ones. */
export function policyJudges(policy: Policy, m: AlignModel, heads: HeadEnsemble | null, external: ((config: ExternalJudgeConfig) => NamedJudge) | undefined): NamedJudge[] {
  return policy.safety.judges.map((c): NamedJudge => {
    if (c.kind === 'builtin') {
      if (heads !== null) return { name: c.name, ...safetyJudge(m, heads) };
      // Untrained heads give no verdict (never a safe one): the gate holds and says why.
      const error = 'the built-in heads are not trained yet (no safety reports in the training split)';
      return { name: c.name, judge: async (_p, responses) => responses.map(() => ({ pUnsafe: 1, uncertain: true, error })) };
    }
    try {
      if (external === undefined) throw new Error(`no adapter for judge kind ${c.kind} is wired in this process`);
      return external(c);
    } catch (err) {
      // A judge that cannot be made (its key unset, its spec unreadable) gives no verdict: the gate holds with the cause.
      const error = `judge ${judgeName(c)} cannot be set up: ${errorMessage(err)}`;
      return { name: judgeName(c), judge: async (_p, responses) => responses.map(() => ({ pUnsafe: 1, uncertain: true, error })) };
    }
  });
}

/** Held-out production safety reports as labelled unsafe examples (evaluation only: the heads train on the training split). */
export function productionLabelled(examples: readonly Example[], policy: Policy): { labelled: LabelledExample[]; used: Example[] } {
  const used = examples.filter((e) => e.type === 'safety' && e.heldout && e.response !== null);
  const labelled = used.map((e) => {
    const category = mapCategory(policy.safety.categories.map, e.category);
    return { prompt: promptText(e.prompt), response: e.response!, unsafe: true, ...(category === undefined ? {} : { category }), source: 'production' as const };
  });
  return { labelled, used };
}
