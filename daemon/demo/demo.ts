/**
 * `alignd demo`: a simulated production around the real daemon. Each demo round, simulated users
 * send prompts to the currently served version, compare two of its sampled answers under a hidden
 * gold rule (with label noise) and report answers that match a hidden unsafe pattern; the
 * feedback goes in through the daemon's own HTTP endpoint, a manual trigger runs the round (the
 * cron and min-new-examples triggers are off so a seed reproduces the run), the gate decides,
 * promotions land in the file-drop target. The safety judge is the demo's guard model (guard.ts, a
 * second process speaking the OpenAI API, calibrated on labelled probes). The demo only watches: at
 * the end, the version served at the start and the one served at the end answer the same prompts
 * under the same sampling seeds, and the summary reports the paired gold gain and both unsafe rates
 * with 95% intervals (measure.ts), and per round the reward signal's held-out accuracy and the
 * red-team unsafe rates as the judge saw them.
 */
import type { Logger } from '../base/log.js';
import type { Loop } from '../loop/model-loop.js';
import type { RoundSummary } from '../loop/training-round.js';
import type { FeedbackEvent } from '../feedback/schema.js';
import { createRng } from '../base/random.js';
import { gold, isUnsafe } from './oracle.js';
import { type Comparison, compareVersions } from './measure.js';

export interface DemoOptions {
  rounds: number;
  /** Prompts per demo round; each gives one preference (two sampled answers). */
  promptsPerRound: number;
  /** Share of preference labels flipped (users are noisy). */
  noise: number;
  /** Share of unsafe answers users report. */
  reportRate: number;
  seed: number;
  /** Measurement: demo prompts × sampling seeds each version answers at the end (measure.ts). */
  measurePrompts: number;
  measureSeeds: number;
  log: Logger;
}

export interface DemoSummary {
  demo: 'done';
  rounds: number;
  promotions: number;
  rejections: number;
  holds: number;
  discarded: number;
  gold_reward_start: number;
  gold_reward_end: number;
  /** Paired gold gain of the end version over the start version, with its 95% interval. */
  gold_gain: number;
  gold_gain_ci95: [number, number];
  max_round_kl: number;
  kl_budget: number;
  unsafe_rate_start: number;
  unsafe_rate_end: number;
  /** Per gated round, the red-team unsafe rate as the safety judge saw it, candidate and deployed. */
  judged_unsafe: Array<{ round: number; candidate: number | null; deployed: number | null }>;
  /** Two-sided 95% Clopper–Pearson intervals of the unsafe rates, and the counts behind them. */
  unsafe_rate_start_ci95: [number, number];
  unsafe_rate_end_ci95: [number, number];
  unsafe_start: string;
  unsafe_end: string;
  /** The measurement's size: demo prompts × sampling seeds per version (plus red-team prompts for the unsafe rate). */
  measured: { prompts: number; seeds: number; red_team: number };
  /** Per round: the reward signal the gate read and its held-out ranking accuracy (correct/pairs). */
  reward_signal: Array<{ round: number; name: string | null; heldout: string | null }>;
}

const TOPICS = ['something', 'a line', 'a word', 'a note', 'a reply', 'a title', 'a summary', 'a greeting'];

/** A prompt as the demo's users send them. */
export const demoPrompt = (rng: { next(): number }): string => `Write ${TOPICS[Math.floor(rng.next() * TOPICS.length)]} ${Math.floor(rng.next() * 1000)}`;
const SAMPLING = { maxNewTokens: 32, sampling: { temperature: 1.0, topP: 1.0 } };

/** Wait for the next round the daemon finishes (its own triggers start it). */
export function roundWaiter(): { onRound: (s: RoundSummary) => void; next: (timeoutMs: number) => Promise<RoundSummary> } {
  const done: RoundSummary[] = [];
  let wake: (() => void) | undefined;
  return {
    onRound: (s) => { done.push(s); wake?.(); },
    async next(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (done.length === 0) {
        if (Date.now() > deadline) throw new Error(`no round finished within ${Math.round(timeoutMs / 1000)} s`);
        await new Promise<void>((r) => { wake = r; setTimeout(r, 1000); });
      }
      return done.shift()!;
    },
  };
}

export async function runDemo(loop: Loop, url: string, next: (timeoutMs: number) => Promise<RoundSummary>, o: DemoOptions): Promise<DemoSummary> {
  const rt = loop.runtimes[0]!;
  const model = rt.model;
  const policy = rt.policy();
  const log = o.log.child({ demo: true });
  const rng = createRng(o.seed);
  const m = await rt.align();
  const served = async () => rt.adapterOf(rt.registry.deployment()?.last_complete ?? null);
  const redTeam = policy.probes.red_team.map((p) => p.prompt);
  // Measurement prompts from the demo's prompt distribution, on their own stream (the feedback
  // stream below stays what it was for a seed).
  const mrng = createRng(o.seed * 7919 + 104_729);
  const measurePrompts = Array.from({ length: o.measurePrompts }, () => demoPrompt(mrng));
  const answerWith = (adapter: Awaited<ReturnType<typeof served>>) => async (prompts: readonly string[], seed: number): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < prompts.length; i += 128) {
      out.push(...(await m.model.generateText(prompts.slice(i, i + 128), { ...SAMPLING, seed: seed + i }, adapter)).map((a) => a.text));
    }
    return out;
  };
  const startVersion = rt.registry.deployment()?.desired ?? 'base';
  const startAdapter = await served();
  log.info('demo: start version', { version: startVersion });
  const counts = { promote: 0, reject: 0, hold: 0, discarded: 0 };
  const signals: DemoSummary['reward_signal'] = [];
  let maxKl = 0;
  const judged: DemoSummary['judged_unsafe'] = [];
  // Ids from the seed and the rounds already in this data dir: a fresh run reproduces the same
  // held-out split (it hashes event ids), a rerun in the same dir still sends new events.
  const runNo = loop.runtimes[0]!.registry.auditRecords().filter((a) => a.event === 'demo.run').length + 1;
  await rt.registry.audit('demo.run', { run: runNo, seed: o.seed, rounds: o.rounds });
  let eventNo = 0;
  for (let r = 1; r <= o.rounds; r++) {
    const version = rt.registry.deployment()?.desired ?? 'v0';
    const adapter = await served();
    const prompts = Array.from({ length: o.promptsPerRound }, () => demoPrompt(rng));
    const seed = Math.floor(rng.next() * 1e9);
    const [a, b] = await Promise.all([
      m.model.generateText(prompts, { ...SAMPLING, seed }, adapter),
      m.model.generateText(prompts, { ...SAMPLING, seed: seed + 100_000 }, adapter),
    ]);
    const events: FeedbackEvent[] = [];
    const base = (i: number) => ({ ts: new Date().toISOString(), model, model_version: version, prompt: prompts[i]!,
      source: { user: `demo-user-${Math.floor(rng.next() * 400)}`, tenant: `demo-tenant-${i % 4}`, channel: 'demo' } });
    prompts.forEach((_, i) => {
      const ya = a[i]!.text;
      const yb = b[i]!.text;
      const ga = gold(ya);
      const gb = gold(yb);
      if (Math.abs(ga - gb) >= 0.02 && ya !== yb) {
        let [chosen, rejected] = ga > gb ? [ya, yb] : [yb, ya];
        if (rng.next() < o.noise) [chosen, rejected] = [rejected, chosen];
        events.push({ ...base(i), event_id: `demo-s${o.seed}-run${runNo}-${eventNo++}`, kind: 'preference', chosen, rejected });
      }
      for (const y of [ya, yb]) {
        if (isUnsafe(y) && rng.next() < o.reportRate) {
          events.push({ ...base(i), event_id: `demo-s${o.seed}-run${runNo}-${eventNo++}`, kind: 'safety_report', response: y, category: 'policy_violation', severity: 'high' });
        }
      }
    });
    const res = await fetch(new URL('/v1/feedback', url), { method: 'POST', headers: { 'content-type': 'application/x-ndjson' },
      body: events.map((e) => JSON.stringify(e)).join('\n') + '\n' });
    const taken = (await res.json()) as { stored: number; rejected: unknown[] };
    log.info('demo: feedback sent', { round: r, served: version, events: events.length, stored: taken.stored, rejected: taken.rejected.length });
    // The demo triggers each round itself (as an operator's manual trigger would), once its
    // feedback is in: the same windows every run, so a seed reproduces the run.
    void loop.scheduler.trigger(model, `demo round ${r}`);
    const summary = await next(15 * 60_000);
    const out = summary.outcome;
    counts[out.decision]++;
    const sig = out['rewardSignal'] as { name: string; heldoutPairs: number; heldoutCorrect: number } | undefined;
    signals.push({ round: summary.round, name: sig?.name ?? null, heldout: sig === undefined ? null : `${sig.heldoutCorrect}/${sig.heldoutPairs}` });
    if (typeof out.klRound === 'number' && Number.isFinite(out.klRound)) maxKl = Math.max(maxKl, out.klRound);
    const rate = (x: unknown): number | null => (typeof x === 'number' ? round4(x) : null);
    if (out.decision !== 'discarded') judged.push({ round: summary.round, candidate: rate(out['unsafeRate']), deployed: rate(out['unsafeRateDeployed']) });
    log.info('demo: round done', { round: summary.round, version: summary.version ?? null, decision: out.decision, reasons: out.reasons ?? [],
      kl_round: out.klRound ?? null, kl_budget: policy.kl.per_round, reward_signal: sig ?? null, reward_lcb: out.rewardLcb ?? null, unsafe_ucb: out.unsafeUcb ?? null,
      judged_unsafe: { candidate: out['unsafeRate'] ?? null, deployed: out['unsafeRateDeployed'] ?? null }, judges: out['judges'] ?? null,
      served_now: rt.registry.deployment()?.desired ?? 'base' });
  }
  const endVersion = rt.registry.deployment()?.desired ?? 'base';
  const c: Comparison = await compareVersions(answerWith(startAdapter), answerWith(await served()), {
    prompts: measurePrompts, redTeam, seeds: o.measureSeeds, seedBase: 1234,
  });
  log.info('demo: start and end versions measured', { start: startVersion, end: endVersion, gold_gain: c.goldGain, unsafe_start: c.unsafeStart, unsafe_end: c.unsafeEnd });
  const ci = (lo: number, hi: number): [number, number] => [round4(lo), round4(hi)];
  return {
    demo: 'done', rounds: o.rounds, promotions: counts.promote, rejections: counts.reject, holds: counts.hold, discarded: counts.discarded,
    gold_reward_start: round4(c.goldStart), gold_reward_end: round4(c.goldEnd), gold_gain: round4(c.goldGain.mean), gold_gain_ci95: ci(c.goldGain.lower, c.goldGain.upper),
    max_round_kl: round4(maxKl), kl_budget: policy.kl.per_round,
    unsafe_rate_start: round4(c.unsafeStart.rate), unsafe_rate_end: round4(c.unsafeEnd.rate),
    unsafe_rate_start_ci95: ci(c.unsafeStart.lower, c.unsafeStart.upper), unsafe_rate_end_ci95: ci(c.unsafeEnd.lower, c.unsafeEnd.upper),
    unsafe_start: `${c.unsafeStart.unsafe}/${c.unsafeStart.answers}`, unsafe_end: `${c.unsafeEnd.unsafe}/${c.unsafeEnd.answers}`,
    measured: { prompts: c.prompts, seeds: c.seeds, red_team: redTeam.length }, reward_signal: signals, judged_unsafe: judged,
  };
}

const round4 = (x: number): number => Math.round(x * 1e4) / 1e4;
