/**
 * Every DPO loss_type and KTO against closed-form values computed here by hand from made-up
 * log-probs, run as real onnxruntime programs in float64; plus the gradients with respect to the
 * policy log-probs against their closed forms (the reference inputs get none).
 */
import t from 'tap';
import { type Value, createSession, f64, grad, graph, input, numbers, output, param, run, toOnnx } from '../../daemon/engine/index.js';
import { type DpoLossType, dpoLosses, dpoObjective, ktoObjective, nllTerm } from '../../daemon/align/losses.js';

const pc = [-12.0, -8.5, -20.25, -5.0];
const pr = [-13.5, -8.0, -22.0, -9.0];
const rc = [-12.5, -8.25, -21.0, -6.0];
const rr = [-13.0, -8.5, -21.5, -7.5];
const lc = [6, 4, 10, 3];
const lr = [7, 4, 11, 5];
const P = pc.length;

const logSig = (x: number): number => (x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x)));
const sig = (x: number): number => 1 / (1 + Math.exp(-x));
const meanOf = (xs: number[]): number => xs.reduce((s, x) => s + x, 0) / xs.length;

function closedForm(type: DpoLossType, beta: number, eps: number): { loss: number; dChosen: number[] } {
  const losses: number[] = [];
  const d: number[] = [];
  for (let i = 0; i < P; i++) {
    const delta = (pc[i]! - rc[i]!) - (pr[i]! - rr[i]!);
    const z = beta * delta;
    if (type === 'sigmoid') {
      losses.push(-logSig(z));
      d.push(-beta * sig(-z) / P);
    }
    if (type === 'robust') {
      losses.push((-(1 - eps) * logSig(z) + eps * logSig(-z)) / (1 - 2 * eps));
      d.push(beta * (-(1 - eps) * sig(-z) - eps * sig(z)) / (1 - 2 * eps) / P);
    }
    if (type === 'ipo') {
      const u = (pc[i]! - rc[i]!) / lc[i]! - (pr[i]! - rr[i]!) / lr[i]! - 1 / (2 * beta);
      losses.push(u * u); d.push(2 * u / lc[i]! / P);
    }
    if (type === 'hinge') { losses.push(Math.max(0, 1 - z)); d.push(1 - z > 0 ? -beta / P : 0); }
  }
  return { loss: meanOf(losses), dChosen: d };
}

async function runDpo(type: DpoLossType, beta: number, eps: number) {
  const g = graph(`dpo_${type}`);
  const chosen = param(g, 'chosen', 'float64', [P]);
  const rejected = param(g, 'rejected', 'float64', [P]);
  const refChosen = input(g, 'ref_chosen', 'float64', [P]);
  const refRejected = input(g, 'ref_rejected', 'float64', [P]);
  const chosenLength = input(g, 'chosen_length', 'float64', [P]);
  const rejectedLength = input(g, 'rejected_length', 'float64', [P]);
  const betaIn = input(g, 'beta', 'float64', []);
  const obj = dpoObjective({ chosen, rejected, refChosen, refRejected, chosenLength, rejectedLength }, { lossType: type, beta: betaIn, labelSmoothing: eps });
  output(obj.loss, 'loss');
  for (const [k, v] of Object.entries(obj.metrics)) output(v, k);
  const [dc] = grad(obj.loss, [chosen]);
  output(dc as Value, 'd_chosen');
  const s = await createSession(toOnnx(g).bytes);
  const out = await run(s, {
    chosen: f64([P], pc), rejected: f64([P], pr), ref_chosen: f64([P], rc), ref_rejected: f64([P], rr),
    chosen_length: f64([P], lc), rejected_length: f64([P], lr), beta: f64([], [beta]),
  });
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, numbers(v)]));
}

for (const [type, beta, eps] of [['sigmoid', 0.1, 0], ['sigmoid', 2, 0], ['robust', 0.5, 0.2], ['robust', 0.5, 0], ['ipo', 0.1, 0], ['ipo', 1, 0], ['hinge', 0.1, 0], ['hinge', 1.5, 0]] as const) {
  t.test(`DPO loss_type ${type} β=${beta} ε=${eps} equals its closed form`, async (t) => {
    const out = await runDpo(type, beta, eps);
    const want = closedForm(type, beta, eps);
    t.ok(Math.abs(out['loss']![0]! - want.loss) < 1e-12, `loss ${out['loss']![0]} vs ${want.loss}`);
    out['d_chosen']!.forEach((x, i) => t.ok(Math.abs(x - want.dChosen[i]!) < 1e-12, `∂/∂chosen[${i}] ${x} vs ${want.dChosen[i]}`));
    const rwC = pc.map((x, i) => beta * (x - rc[i]!));
    const rwR = pr.map((x, i) => beta * (x - rr[i]!));
    t.ok(Math.abs(out['rewards/chosen']![0]! - meanOf(rwC)) < 1e-12);
    t.ok(Math.abs(out['rewards/rejected']![0]! - meanOf(rwR)) < 1e-12);
    t.ok(Math.abs(out['rewards/margins']![0]! - meanOf(rwC.map((x, i) => x - rwR[i]!))) < 1e-12);
    t.equal(out['rewards/accuracies']![0], meanOf(rwC.map((x, i) => (x > rwR[i]! ? 1 : 0))));
    t.ok(Math.abs(out['logps/chosen']![0]! - meanOf(pc)) < 1e-12);
    t.ok(Math.abs(out['logps/rejected']![0]! - meanOf(pr)) < 1e-12);
  });
}

t.test('robust with ε = 0 is sigmoid; ε outside [0, 0.5), or on ipo/hinge, is refused', async (t) => {
  const a = await runDpo('robust', 0.3, 0);
  const b = await runDpo('sigmoid', 0.3, 0);
  t.ok(Math.abs(a['loss']![0]! - b['loss']![0]!) < 1e-14);
  const g = graph('bad');
  const x = input(g, 'x', 'float64', [2]);
  t.throws(() => dpoObjective({ chosen: x, rejected: x, refChosen: x, refRejected: x }, { lossType: 'robust', beta: 0.1, labelSmoothing: 0.5 }), /label_smoothing/);
  t.throws(() => dpoObjective({ chosen: x, rejected: x, refChosen: x, refRejected: x }, { lossType: 'ipo', beta: 0.1, labelSmoothing: 0.1 }), /label_smoothing/);
});

t.test('KTO equals its closed form: z₀ from mismatched pairs, detached and clamped at 0', async (t) => {
  const logps = [-10, -7, -12, -4, -9];
  const ref = [-10.5, -6.5, -12.5, -5, -8];
  const des = [1, 0, 1, 1, 0];
  const cases = [
    { kl: [-30, -25, -28, -22, -26], refKl: [-31, -26, -28.5, -22.25, -27], name: 'positive z₀' },
    { kl: [-30, -25, -28, -22, -26], refKl: [-29, -24, -27, -21, -25], name: 'negative estimate clamped to 0' },
  ];
  for (const c of cases) {
    const beta = 0.5, wD = 1.2, wU = 0.9;
    const N = logps.length;
    const g = graph('kto');
    const lp = param(g, 'logps', 'float64', [N]);
    const klp = param(g, 'kl_logps', 'float64', [N]);
    const obj = ktoObjective({
      logps: lp, refLogps: input(g, 'ref', 'float64', [N]), klLogps: klp, refKlLogps: input(g, 'ref_kl', 'float64', [N]),
      desirable: input(g, 'desirable', 'float64', [N]),
    }, { beta, desirableWeight: wD, undesirableWeight: wU });
    output(obj.loss, 'loss');
    output(obj.metrics['kl']!, 'kl');
    output(obj.metrics['rewards/chosen']!, 'rc');
    const [dl, dk] = grad(obj.loss, [lp, klp]);
    output(dl!, 'd_logps');
    output(dk!, 'd_kl');
    const s = await createSession(toOnnx(g).bytes);
    const out = await run(s, { logps: f64([N], logps), ref: f64([N], ref), kl_logps: f64([N], c.kl), ref_kl: f64([N], c.refKl), desirable: f64([N], des) });
    const z0 = Math.max(0, meanOf(c.kl.map((x, i) => x - c.refKl[i]!)));
    const r = logps.map((x, i) => x - ref[i]!);
    const want = meanOf(r.map((ri, i) => (des[i] ? wD * (1 - sig(beta * (ri - z0))) : wU * (1 - sig(beta * (z0 - ri))))));
    const dWant = r.map((ri, i) => {
      if (des[i]) { const s1 = sig(beta * (ri - z0)); return -wD * beta * s1 * (1 - s1) / N; }
      const s2 = sig(beta * (z0 - ri)); return wU * beta * s2 * (1 - s2) / N;
    });
    t.ok(Math.abs(numbers(out['loss']!)[0]! - want) < 1e-12, `${c.name}: loss ${numbers(out['loss']!)[0]} vs ${want}`);
    t.ok(Math.abs(numbers(out['kl']!)[0]! - z0) < 1e-12, `${c.name}: z₀`);
    numbers(out['d_logps']!).forEach((x, i) => t.ok(Math.abs(x - dWant[i]!) < 1e-12, `∂/∂logps[${i}]`));
    t.same(numbers(out['d_kl']!), [0, 0, 0, 0, 0], `${c.name}: z₀ is detached`);
    const rcWant = meanOf(r.filter((_, i) => des[i]).map((x) => beta * x));
    t.ok(Math.abs(numbers(out['rc']!)[0]! - rcWant) < 1e-12);
  }
});

t.test('RPO NLL term is α · the token-level mean NLL of the chosen responses (TRL: Σ NLL / Σ tokens)', async (t) => {
  // A long and a short response: the token-level mean weighs the long one by its length.
  const chosen = [-30, -2, -12.5];
  const lengths = [10, 1, 5];
  const g = graph('nll');
  const c = input(g, 'c', 'float64', [3]);
  const l = input(g, 'l', 'float64', [3]);
  output(nllTerm(c, l, 0.7), 'nll');
  const s = await createSession(toOnnx(g).bytes);
  const out = await run(s, { c: f64([3], chosen), l: f64([3], lengths) });
  const tokenMean = -chosen.reduce((a, x) => a + x, 0) / lengths.reduce((a, x) => a + x, 0);
  const perSequenceMean = meanOf(chosen.map((x, i) => -x / lengths[i]!));
  t.ok(Math.abs(tokenMean - perSequenceMean) > 0.05, 'the two readings differ on this data (the test can fail)');
  t.ok(Math.abs(numbers(out['nll']!)[0]! - 0.7 * tokenMean) < 1e-12, `nll ${numbers(out['nll']!)[0]} vs α·${tokenMean}`);
});

t.test('label_smoothing: ignored by the sigmoid loss as in TRL >= 0.29, and refused there with a pointer at robust', async (t) => {
  const x = input(graph('ls'), 'x', 'float64', [P]);
  t.throws(() => dpoObjective({ chosen: x, rejected: x, refChosen: x, refRejected: x }, { lossType: 'sigmoid', beta: 0.1, labelSmoothing: 0.1 }), /no effect on loss_type sigmoid.*loss_type: robust/);
  const g = graph('ls_sigmoid');
  const chosen = input(g, 'chosen', 'float64', [P]);
  const rejected = input(g, 'rejected', 'float64', [P]);
  const refChosen = input(g, 'ref_chosen', 'float64', [P]);
  const refRejected = input(g, 'ref_rejected', 'float64', [P]);
  output(dpoLosses({ chosen, rejected, refChosen, refRejected }, { lossType: 'sigmoid', beta: 0.5, labelSmoothing: 0.2 }), 'with');
  output(dpoLosses({ chosen, rejected, refChosen, refRejected }, { lossType: 'sigmoid', beta: 0.5, labelSmoothing: 0 }), 'without');
  const out = await run(await createSession(toOnnx(g).bytes), { chosen: f64([P], pc), rejected: f64([P], pr), ref_chosen: f64([P], rc), ref_rejected: f64([P], rr) });
  t.same(numbers(out['with']!), numbers(out['without']!));
});

t.test('log σ keeps its gradient at Δ = 0 exactly (a warm-started round\'s first step) and stays finite far out', async (t) => {
  const g = graph('edge');
  const c = param(g, 'c', 'float64', [3]);
  const x = input(g, 'x', 'float64', [3]);
  const obj = dpoObjective({ chosen: c, rejected: x, refChosen: x, refRejected: x }, { lossType: 'sigmoid', beta: 1, labelSmoothing: 0 });
  output(obj.loss, 'loss');
  output(grad(obj.loss, [c])[0]!, 'd');
  const s = await createSession(toOnnx(g).bytes);
  // c − x gives Δ = c − x: 0, then −500 and +500.
  const out = await run(s, { c: f64([3], [1, -499, 501]), x: f64([3], [1, 1, 1]) });
  const d = numbers(out['d']!);
  t.ok(Math.abs(d[0]! - -0.5 / 3) < 1e-12, `∂/∂chosen at Δ=0 is −β·σ(0)/P: ${d[0]}`);
  t.ok(Math.abs(d[1]! - -1 / 3) < 1e-12, `far negative: ${d[1]}`);
  t.ok(Math.abs(d[2]!) < 1e-12, `far positive: ${d[2]}`);
  t.ok(Math.abs(numbers(out['loss']!)[0]! - (Math.log(2) + 500 + 0) / 3) < 1e-9, 'loss finite and exact');
});
