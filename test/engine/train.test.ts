/**
 * Train steps on real onnxruntime sessions: AdamW against a plain TypeScript reference (with weight
 * decay, bias correction and clipping), gradient accumulation against one big batch, and two tiny
 * models trained to a fixed target. On the provider under test (ALIGND_TEST_EP), same bounds.
 */
import t from 'tap';
import { type Value, constant, graph, input, param } from '../../daemon/engine/graph.js';
import { accumulate, applyAccumulated, initAccumulator, initState, trainStep } from '../../daemon/engine/accumulate.js';
import * as O from '../../daemon/engine/ops.js';
import { toOnnx } from '../../daemon/engine/onnx.js';
import { createSession, f32, numbers } from '../../daemon/engine/sessions.js';
import { type HostTensor, randomTensor } from '../../daemon/engine/tensor.js';
import { type AdamWConfig, applyProgram, gradProgram, trainProgram } from '../../daemon/engine/train.js';
import { testRuntime } from '../harness/ep.js';

/** torch.optim.AdamW + clip_grad_norm_, in float64. */
function referenceAdamW(p: Record<string, number[]>, grads: Record<string, number[]>, m: Record<string, number[]>,
  v: Record<string, number[]>, step: number, lr: number, cfg: Required<Omit<AdamWConfig, 'decay'>>, decay: (n: string) => boolean): void {
  let sq = 0;
  for (const gs of Object.values(grads)) for (const x of gs) sq += x * x;
  const coef = Math.min(1, cfg.maxGradNorm / (Math.sqrt(sq) + 1e-6));
  for (const k of Object.keys(p)) {
    const pk = p[k]!;
    for (let i = 0; i < pk.length; i++) {
      const g = grads[k]![i]! * coef;
      if (decay(k)) pk[i]! *= 1 - lr * cfg.weightDecay;
      m[k]![i] = cfg.beta1 * m[k]![i]! + (1 - cfg.beta1) * g;
      v[k]![i] = cfg.beta2 * v[k]![i]! + (1 - cfg.beta2) * g * g;
      const bc1 = 1 - cfg.beta1 ** step;
      const bc2 = 1 - cfg.beta2 ** step;
      pk[i] = pk[i]! - (lr / bc1) * m[k]![i]! / (Math.sqrt(v[k]![i]!) / Math.sqrt(bc2) + cfg.eps);
    }
  }
}

t.test('AdamW steps equal a TypeScript reference (decay, bias correction, clipping)', async (t) => {
  const cfg = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 0.5 };
  const decay = (n: string): boolean => n !== 'bias';
  const g = graph('adamw');
  const c1 = randomTensor('float32', [3, 4], 11, 0.5, 2);
  const c2 = randomTensor('float32', [5], 12);
  const w = param(g, 'w', 'float32', [3, 4]);
  const bias = param(g, 'bias', 'float32', [5]);
  // loss = ½ Σ c1 ⊙ w² + Σ c2 ⊙ bias: gradients c1 ⊙ w and c2, known in closed form.
  const loss = O.add(O.mul(O.sumAll(O.mul(constant(g, c1), O.mul(w, w))), 0.5), O.sumAll(O.mul(constant(g, c2), bias)));
  const info = trainProgram({ loss, params: [w, bias], optimizer: { ...cfg, decay } });
  const session = await createSession(toOnnx(info.graph).bytes, await testRuntime());
  const init: Record<string, HostTensor> = { w: randomTensor('float32', [3, 4], 1), bias: randomTensor('float32', [5], 2) };
  const state = initState(init);

  const p = { w: Array.from(init.w!.data as Float32Array), bias: Array.from(init.bias!.data as Float32Array) };
  const m = { w: new Array(12).fill(0), bias: new Array(5).fill(0) };
  const v = { w: new Array(12).fill(0), bias: new Array(5).fill(0) };
  const cw = Array.from(c1.data as Float32Array);
  const cb = Array.from(c2.data as Float32Array);
  let clipped = 0;
  for (let step = 1; step <= 3; step++) {
    const lr = 0.05 * step;
    const grads = { w: p.w.map((x, i) => cw[i]! * x), bias: cb };
    const norm = Math.sqrt([...grads.w, ...grads.bias].reduce((s, x) => s + x * x, 0));
    if (norm > cfg.maxGradNorm) clipped++;
    const r = await trainStep(session, info, state, {}, lr);
    t.ok(Math.abs(r.gradNorm - norm) <= 1e-5 * norm, `step ${step}: grad norm ${r.gradNorm} vs ${norm}`);
    referenceAdamW(p, grads, m, v, step, lr, cfg, decay);
    const errW = Math.max(...numbers(state.params['w']!).map((x, i) => Math.abs(x - p.w[i]!)));
    const errB = Math.max(...numbers(state.params['bias']!).map((x, i) => Math.abs(x - p.bias[i]!)));
    const errM = Math.max(...numbers(state.m['w']!).map((x, i) => Math.abs(x - m.w[i]!)));
    t.ok(errW <= 1e-6 && errB <= 1e-6 && errM <= 1e-6, `step ${step}: max |Δ| w ${errW.toExponential(1)}, bias ${errB.toExponential(1)}, m ${errM.toExponential(1)}`);
  }
  t.ok(clipped > 0, 'clipping was exercised');
  t.equal(state.step, 3);
});

t.test('a non-finite loss discards the step and says so', async (t) => {
  const g = graph('diverge');
  const w = param(g, 'w', 'float32', [2]);
  const x = input(g, 'x', 'float32', [2]);
  const info = trainProgram({ loss: O.sumAll(O.log(O.mul(w, x))), params: [w] });
  const session = await createSession(toOnnx(info.graph).bytes, await testRuntime());
  const state = initState({ w: randomTensor('float32', [2], 3, 0.5, 1) });
  const before = numbers(state.params['w']!);
  await t.rejects(trainStep(session, info, state, { x: f32([2], [-1, 1]) }, 0.1), { code: 'TRAINING_DIVERGED' });
  t.same(numbers(state.params['w']!), before);
  t.equal(state.step, 0);
});

/** Least squares on a linear model: loss = mean((x·w + b − y)²) over a batch of rows. */
function regression(): { loss: Value; w: Value; b: Value } {
  const g = graph('regression');
  const x = input(g, 'x', 'float32', ['rows', 3]);
  const y = input(g, 'y', 'float32', ['rows', 1]);
  const w = param(g, 'w', 'float32', [3, 1]);
  const b = param(g, 'b', 'float32', [1]);
  const err = O.sub(O.add(O.matmul(x, w), b), y);
  return { loss: O.meanAll(O.mul(err, err)), w, b };
}

t.test('gradient accumulation over micro-batches equals one step on the whole batch', async (t) => {
  const cfg = { weightDecay: 0.01, maxGradNorm: 1 };
  const xs = randomTensor('float32', [8, 3], 21);
  const ys = randomTensor('float32', [8, 1], 22);
  const init = { w: randomTensor('float32', [3, 1], 23), b: randomTensor('float32', [1], 24) };
  const whole = regression();
  const one = trainProgram({ loss: whole.loss, params: [whole.w, whole.b], optimizer: cfg });
  const micro = regression();
  const gp = gradProgram({ loss: micro.loss, params: [micro.w, micro.b] });
  const ap = applyProgram([{ name: 'w', dtype: 'float32', shape: [3, 1] }, { name: 'b', dtype: 'float32', shape: [1] }], cfg);
  const [s1, s2, s3] = await Promise.all([one, gp, ap].map(async (p) => createSession(toOnnx(p.graph).bytes, await testRuntime())));

  const a = initState(init);
  const bstate = initState(init);
  const rowsOf = (t: HostTensor, lo: number, hi: number, cols: number): ReturnType<typeof f32> =>
    f32([hi - lo, cols], (t.data as Float32Array).subarray(lo * cols, hi * cols));
  for (let step = 0; step < 3; step++) {
    const r1 = await trainStep(s1!, one, a, { x: rowsOf(xs, 0, 8, 3), y: rowsOf(ys, 0, 8, 1) }, 0.1);
    const acc = initAccumulator(bstate);
    await accumulate(s2!, gp, bstate, acc, { x: rowsOf(xs, 0, 4, 3), y: rowsOf(ys, 0, 4, 1) });
    await accumulate(s2!, gp, bstate, acc, { x: rowsOf(xs, 4, 8, 3), y: rowsOf(ys, 4, 8, 1) });
    const r2 = await applyAccumulated(s3!, ap, bstate, acc, 0.1);
    t.ok(Math.abs(r1.gradNorm - r2.gradNorm) <= 1e-6 * r1.gradNorm, `step ${step}: grad norm ${r1.gradNorm} vs accumulated ${r2.gradNorm}`);
    t.ok(Math.abs(r1.loss - r2.loss) <= 1e-6 * r1.loss, `step ${step}: loss ${r1.loss} vs mean of micro-batches ${r2.loss}`);
  }
  t.not(numbers(a.params['w']!)[0], (init.w.data as Float32Array)[0], 'the parameters moved');
  const err = Math.max(...numbers(a.params['w']!).map((x, i) => Math.abs(x - numbers(bstate.params['w']!)[i]!)));
  t.ok(err <= 1e-6, `max |Δw| ${err.toExponential(1)}`);
  t.ok(Math.abs(numbers(a.params['b']!)[0]! - numbers(bstate.params['b']!)[0]!) <= 1e-6);
});

t.test('a tiny MLP fits a fixed target (MSE < 2e-3 from ≈ 0.3)', async (t) => {
  const g = graph('mlp');
  const x = input(g, 'x', 'float32', [32, 4]);
  const y = input(g, 'y', 'float32', [32, 1]);
  const w1 = param(g, 'w1', 'float32', [4, 32]);
  const b1 = param(g, 'b1', 'float32', [32]);
  const w2 = param(g, 'w2', 'float32', [32, 1]);
  const h = O.gelu(O.add(O.matmul(x, w1), b1), 'tanh');
  const err = O.sub(O.matmul(h, w2), y);
  const info = trainProgram({ loss: O.meanAll(O.mul(err, err)), params: [w1, b1, w2], optimizer: { weightDecay: 0 } });
  const session = await createSession(toOnnx(info.graph).bytes, await testRuntime());
  const xs = randomTensor('float32', [32, 4], 31);
  const xd = xs.data as Float32Array;
  // Target: a smooth fixed function of the inputs.
  const ys = Array.from({ length: 32 }, (_, i) => Math.sin(xd[i * 4]! * 2) * 0.5 + xd[i * 4 + 1]! * xd[i * 4 + 2]!);
  const state = initState({
    w1: randomTensor('float32', [4, 32], 32, -0.5, 0.5), b1: randomTensor('float32', [32], 33, -0.1, 0.1),
    w2: randomTensor('float32', [32, 1], 34, -0.2, 0.2),
  });
  const batch = { x: f32([32, 4], xd), y: f32([32, 1], ys) };
  let first = NaN;
  let last = NaN;
  for (let i = 0; i < 400; i++) {
    const r = await trainStep(session, info, state, batch, 0.02);
    if (i === 0) first = r.loss;
    last = r.loss;
  }
  t.ok(first > 0.1, `initial loss ${first.toFixed(4)}`);
  t.ok(last < 2e-3, `final loss ${last.toExponential(2)}`);
});

t.test('a tiny causal self-attention block fits a fixed target (loss < 5% of initial)', async (t) => {
  const [B, S, D, H] = [2, 6, 8, 2];
  const dh = D / H;
  const g = graph('attn');
  const x = input(g, 'x', 'float32', [B, S, D]);
  const target = input(g, 'target', 'float32', [B, S, D]);
  const wq = param(g, 'wq', 'float32', [D, D]);
  const wk = param(g, 'wk', 'float32', [D, D]);
  const wv = param(g, 'wv', 'float32', [D, D]);
  const wo = param(g, 'wo', 'float32', [D, D]);
  const ln = param(g, 'ln', 'float32', [D]);
  const xn = O.rmsNorm(x, ln);
  const heads = (v: Value): Value => O.transpose(O.reshape(v, [B, S, H, dh]), [0, 2, 1, 3]);
  const q = heads(O.matmul(xn, wq));
  const k = heads(O.matmul(xn, wk));
  const v = heads(O.matmul(xn, wv));
  const scores = O.matmul(q, k, { transB: true, alpha: 1 / Math.sqrt(dh) });
  const p = O.softmax(O.where(O.causalMask(scores), scores, -1e9), -1);
  const ctx = O.reshape(O.transpose(O.matmul(p, v), [0, 2, 1, 3]), [B, S, D]);
  const out = O.add(x, O.matmul(ctx, wo));
  const err = O.sub(out, target);
  const info = trainProgram({ loss: O.meanAll(O.mul(err, err)), params: [wq, wk, wv, wo, ln], optimizer: { weightDecay: 0, maxGradNorm: 1 } });
  const session = await createSession(toOnnx(info.graph).bytes, await testRuntime());
  // Target: x plus the causal running mean of x (what uniform causal attention computes).
  const xs = randomTensor('float32', [B, S, D], 41);
  const xd = xs.data as Float32Array;
  const td = new Float32Array(B * S * D);
  for (let b = 0; b < B; b++) for (let s = 0; s < S; s++) for (let d = 0; d < D; d++) {
    let acc = 0;
    for (let j = 0; j <= s; j++) acc += xd[(b * S + j) * D + d]!;
    td[(b * S + s) * D + d] = xd[(b * S + s) * D + d]! + acc / (s + 1);
  }
  const init: Record<string, HostTensor> = { ln: randomTensor('float32', [D], 46, 0.9, 1.1) };
  ['wq', 'wk', 'wv', 'wo'].forEach((n, i) => { init[n] = randomTensor('float32', [D, D], 42 + i, -0.3, 0.3); });
  const state = initState(init);
  const batch = { x: f32([B, S, D], xd), target: f32([B, S, D], td) };
  let first = NaN;
  let last = NaN;
  for (let i = 0; i < 300; i++) {
    const r = await trainStep(session, info, state, batch, 0.01);
    if (i === 0) first = r.loss;
    last = r.loss;
  }
  t.ok(last < 0.05 * first, `loss ${first.toFixed(4)} → ${last.toExponential(2)}`);
});
