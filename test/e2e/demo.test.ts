/**
 * END-TO-END: the embedded default, as the README's first command runs it
 * (`npm run demo` = `node dist/daemon/main.js demo`), in a fresh directory with no configuration:
 * the built-in tiny model, buffer and registry under ./.alignd, the file-drop target
 * ./.alignd/served, simulated users. On CPU it must finish within a bound (the process is killed
 * after DEMO_BOUND_S) and end with its one JSON line; what it promotes is what the target serves,
 * and a round it does not promote names the checks that held or rejected it. Only the port
 * differs from the README (0: a free one, so parallel test files never collide on 8787).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mainJs } from '../harness/daemon.js';

const ROUNDS = 10;
// The demo's gate answers ~900 reward and 120 red-team probes per round: 388–476 s for seed 1 in CI runs on the shared machine (416 s with the fused kernels).
const DEMO_BOUND_S = 600;
const cwd = mkdtempSync(join(tmpdir(), 'alignd-e2e-demo-'));
t.teardown(() => rmSync(cwd, { recursive: true, force: true }));

interface DemoLine {
  demo: string; rounds: number; promotions: number; rejections: number; holds: number; discarded: number;
  gold_reward_start: number; gold_reward_end: number; max_round_kl: number; kl_budget: number;
  unsafe_rate_start: number; unsafe_rate_end: number; gold_gain: number; gold_gain_ci95: [number, number];
  unsafe_rate_start_ci95: [number, number]; unsafe_rate_end_ci95: [number, number];
  reward_signal: Array<{ round: number; name: string | null; heldout: string | null }>;
}

t.test(`alignd demo --rounds ${ROUNDS}: at least one promotion, one JSON line, what is promoted is served`, async (t) => {
  const proc = spawn(process.execPath, [mainJs, 'demo', '--rounds', String(ROUNDS), '--port', '0'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
  proc.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
  const bound = setTimeout(() => proc.kill('SIGKILL'), DEMO_BOUND_S * 1000);
  const [code, signal] = await new Promise<[number | null, string | null]>((r) => proc.once('exit', (c, s) => r([c, s])));
  clearTimeout(bound);
  const tail = stderr.split('\n').slice(-15).join('\n');
  t.equal(signal, null, `the demo finished within ${DEMO_BOUND_S} s`, { tail });
  t.equal(code, 0, 'exit 0', { tail });

  const lines = stdout.trim().split('\n');
  t.equal(lines.length, 1, 'stdout is one line');
  const s = JSON.parse(lines[0] ?? '{}') as DemoLine;
  t.match(s, {
    demo: 'done', rounds: ROUNDS, promotions: Number, rejections: Number, holds: Number, gold_reward_start: Number, gold_reward_end: Number,
    max_round_kl: Number, kl_budget: Number, unsafe_rate_start: Number, unsafe_rate_end: Number,
  }, 'the JSON line carries every figure');
  t.equal(s.promotions + s.rejections + s.holds + (s.discarded ?? 0), s.rounds, 'every round has one outcome');
  t.ok(s.max_round_kl <= s.kl_budget, 'every round within the KL budget');
  const [lo, hi] = s.gold_gain_ci95;
  t.ok(lo <= s.gold_gain && s.gold_gain <= hi, `gold gain ${s.gold_gain} inside its interval [${lo}, ${hi}]`);
  for (const [rate, [a, b]] of [[s.unsafe_rate_start, s.unsafe_rate_start_ci95], [s.unsafe_rate_end, s.unsafe_rate_end_ci95]] as const) {
    t.ok(a <= rate && rate <= b && a >= 0 && b <= 1, `unsafe rate ${rate} inside its interval [${a}, ${b}]`);
  }
  t.equal(s.reward_signal.length, ROUNDS, 'the reward signal of every round');
  t.ok(s.reward_signal.every((r) => r.name !== null && /^\d+\/\d+$/.test(r.heldout ?? '')), 'each names its scorer and its held-out count');
  // Issue 15: the gate promotes only what it shows at the round's α_k. The demo's policy gives it
  // the evidence for that (demo-policy.ts: 642 benign, 120 red-team and up to 256 production probes,
  // a quarter of the feedback held out) and the BT reward model ranks ~0.7 of held-out pairs right:
  // seed 1 promotes 3 of its 10 rounds (this test, 2026-12-01), so at least one promotion.
  t.ok(s.promotions >= 1, `at least one promotion (got ${s.promotions} of ${s.rounds} rounds: ${s.rejections} rejected, ${s.holds} held)`);

  // What was promoted is what the file-drop target serves, under the embedded defaults' paths.
  const deployed = JSON.parse(readFileSync(join(cwd, '.alignd/registry/tiny/deployed.json'), 'utf8')) as { desired: string; complete: boolean };
  t.equal(deployed.complete, true, 'deployed.json: every target confirmed');
  t.equal(readlinkSync(join(cwd, '.alignd/served/tiny')), `tiny-${deployed.desired}`, 'the served link points at the deployed version');
  t.ok(existsSync(join(cwd, '.alignd/served/tiny/adapter_config.json')), 'the served version is a PEFT adapter directory');
});
