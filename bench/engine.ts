/**
 * Engine benchmark: one pre-norm transformer block (d_model 512, 8 heads, seq 256, batch 8,
 * d_ff 2048, GELU; LoRA r=16 on q, k, v, o; frozen base weights as initializers) timed as
 * (a) forward alone and (b) a train step (forward + backward + clipping + AdamW, one session.run),
 * with product FLOPs counted from the graphs, and (c) a 2048³ MatMul on the same provider as the
 * rate baseline of this machine. Last line is the JSON summary.
 *
 *   npm run bench:engine -- [--ep cpu|webgpu|cuda] [--threads N] [--iters N] [--mlp 0] [--spin] [--nodes] [--dump DIR]
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { type Graph, type Value, frozen, graph, input, output, param } from '../daemon/engine/graph.js';
import { initState, trainStep } from '../daemon/engine/accumulate.js';
import * as O from '../daemon/engine/ops.js';
import { toOnnx } from '../daemon/engine/onnx.js';
import { productFlops } from '../daemon/engine/flops.js';
import { type Provider, type Session, createSession, f32, run } from '../daemon/engine/sessions.js';
import { type HostTensor, randomTensor } from '../daemon/engine/tensor.js';
import { trainProgram } from '../daemon/engine/train.js';

const arg = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt;
};
const provider = arg('ep', 'cpu') as Provider;
const threads = Number(arg('threads', '0'));
const iters = Number(arg('iters', '10'));
const withMlp = arg('mlp', '1') !== '0'; // --mlp 0: attention only, as the calibration in notes/engine.md
const dump = arg('dump', ''); // a folder to write forward.onnx and step.onnx into, for profiling

const [B, S, D, H, F, R] = [8, 256, 512, 8, 2048, 16];
const dh = D / H;
const scale = 2; // LoRA α/r with α = 32

interface Block { g: Graph; loss: Value; lora: Value[]; init: Record<string, HostTensor> }

function block(): Block {
  const g = graph('bench_block');
  let seed = 100;
  const w = (name: string, dims: number[], s = 0.02): Value => frozen(g, name, randomTensor('float32', dims, seed++, -s, s));
  const x = input(g, 'x', 'float32', [B, S, D]);
  const target = input(g, 'target', 'float32', [B, S, D]);
  const init: Record<string, HostTensor> = {};
  const lora: Value[] = [];
  const linear = (h: Value, name: string): Value => {
    const base = O.matmul(h, w(`${name}.weight`, [D, D]));
    const a = param(g, `${name}.lora_A`, 'float32', [D, R]);
    const b = param(g, `${name}.lora_B`, 'float32', [R, D]);
    init[a.name] = randomTensor('float32', [D, R], seed++, -0.05, 0.05);
    init[b.name] = randomTensor('float32', [R, D], seed++, -0.01, 0.01);
    lora.push(a, b);
    // The LoRA scale goes on the rank-r activation: a pass over [tokens, r], not [tokens, d], both ways.
    return O.add(base, O.matmul(O.mul(O.matmul(h, a), scale), b));
  };
  const ones = (name: string): Value => frozen(g, name, { dtype: 'float32', dims: [D], data: new Float32Array(D).fill(1) });
  const zeros = (name: string): Value => frozen(g, name, { dtype: 'float32', dims: [D], data: new Float32Array(D) });
  const heads = (v: Value): Value => O.transpose(O.reshape(v, [B, S, H, dh]), [0, 2, 1, 3]);

  const h1 = O.layerNorm(x, ones('ln1.weight'), zeros('ln1.bias'));
  const q = heads(linear(h1, 'q'));
  const k = heads(linear(h1, 'k'));
  const v = heads(linear(h1, 'v'));
  const scores = O.matmul(q, k, { transB: true, alpha: 1 / Math.sqrt(dh) });
  const p = O.softmax(O.add(scores, O.causalBias(scores)), -1);
  const ctx = O.reshape(O.transpose(O.matmul(p, v), [0, 2, 1, 3]), [B, S, D]);
  const x2 = O.add(x, linear(ctx, 'o'));
  const mlp = (): Value => {
    const h2 = O.layerNorm(x2, ones('ln2.weight'), zeros('ln2.bias'));
    return O.matmul(O.gelu(O.add(O.matmul(h2, w('fc.weight', [D, F])), w('fc.bias', [F])), 'tanh'), w('proj.weight', [F, D]));
  };
  const out = withMlp ? O.add(x2, mlp()) : x2;
  const err = O.sub(out, target);
  return { g, loss: O.meanAll(O.mul(err, err)), lora, init };
}

/**
 * Median wall time of each job over `n` rounds; the jobs run interleaved (one of each per round)
 * so that load from other processes falls on all of them alike and their ratios stay fair.
 */
async function timeInterleaved(n: number, jobs: Record<string, () => Promise<unknown>>): Promise<Record<string, number>> {
  const ts: Record<string, number[]> = {};
  for (const [k, f] of Object.entries(jobs)) { ts[k] = []; for (let i = 0; i < 2; i++) await f(); }
  for (let i = 0; i < n; i++) {
    for (const [k, f] of Object.entries(jobs)) {
      const t0 = performance.now();
      await f();
      ts[k]!.push(performance.now() - t0);
    }
  }
  const med: Record<string, number> = {};
  for (const [k, v] of Object.entries(ts)) {
    v.sort((x, y) => x - y);
    med[k] = v[Math.floor(v.length / 2)]!;
    console.log(`${k}: median ${med[k]!.toFixed(1)} ms (min ${v[0]!.toFixed(1)}, max ${v[v.length - 1]!.toFixed(1)}, n=${n})`);
  }
  return med;
}

async function main(): Promise<void> {
  const opts = { provider, threads, spinning: process.argv.includes('--spin') };
  const batch = { x: f32([B, S, D], randomTensor('float32', [B, S, D], 1).data as Float32Array),
    target: f32([B, S, D], randomTensor('float32', [B, S, D], 2).data as Float32Array) };

  // (a) forward alone: the same block, loss as the only output, LoRA tensors fed as inputs.
  const fwd = block();
  output(fwd.loss, 'loss');
  const fwdFlops = productFlops(fwd.g);
  const fwdBytes = toOnnx(fwd.g).bytes;
  const fwdSession: Session = await createSession(fwdBytes, opts);
  const fwdFeeds = { ...batch, ...Object.fromEntries(Object.entries(fwd.init).map(([k, t]) => [k, f32(t.dims, t.data as Float32Array)])) };

  // (b) train step: forward + backward + clip + AdamW.
  const tr = block();
  const info = trainProgram({ loss: tr.loss, params: tr.lora, optimizer: { maxGradNorm: 1, weightDecay: 0 } });
  const stepFlops = productFlops(tr.g);
  const stepBytes = toOnnx(tr.g).bytes;
  if (dump !== '') {
    writeFileSync(join(dump, 'forward.onnx'), fwdBytes);
    writeFileSync(join(dump, 'step.onnx'), stepBytes);
  }
  const stepSession = await createSession(stepBytes, opts);
  const state = initState(tr.init);
  const backwardNodes = tr.g.nodes.length - fwd.g.nodes.length;
  if (process.argv.includes('--nodes')) {
    const shape = (n: string): string => `[${tr.g.values.get(n)?.shape?.join(',') ?? '?'}]`;
    for (const n of tr.g.nodes) console.log(`${n.name}: ${n.inputs.map(shape).join(' ')} -> ${n.outputs.map(shape).join(' ')} ${JSON.stringify(Object.fromEntries(Object.entries(n.attrs).map(([k, a]) => [k, a.v])))}`);
  }
  console.log(`graph: forward ${fwd.g.nodes.length} nodes, train step ${tr.g.nodes.length} nodes (+${backwardNodes} backward/optimizer)`);
  console.log(`product FLOPs: forward ${(fwdFlops / 1e9).toFixed(2)} G, step ${(stepFlops / 1e9).toFixed(2)} G (${(stepFlops / fwdFlops).toFixed(2)}× forward)`);

  // (c) a large square MatMul on the same provider.
  const N = 2048;
  const mg = graph('bench_matmul');
  output(O.matmul(input(mg, 'a', 'float32', [N, N]), input(mg, 'b', 'float32', [N, N])), 'c');
  const mm = await createSession(toOnnx(mg), opts);
  const mf = { a: f32([N, N], randomTensor('float32', [N, N], 3).data as Float32Array), b: f32([N, N], randomTensor('float32', [N, N], 4).data as Float32Array) };
  // The block's own product shape (tokens × d × d), for what limits the step.
  const sg = graph('bench_matmul_block');
  output(O.matmul(input(sg, 'a', 'float32', [B * S, D]), input(sg, 'b', 'float32', [D, D])), 'c');
  const sm = await createSession(toOnnx(sg), opts);
  const sf = { a: f32([B * S, D], randomTensor('float32', [B * S, D], 5).data as Float32Array), b: f32([D, D], randomTensor('float32', [D, D], 6).data as Float32Array) };
  const med = await timeInterleaved(iters, {
    forward: () => run(fwdSession, fwdFeeds),
    'train step': () => trainStep(stepSession, info, state, batch, 1e-4),
    [`matmul ${N}³`]: () => run(mm, mf),
    [`matmul ${B * S}×${D}×${D}`]: () => run(sm, sf),
  });
  const [forwardMs, stepMs, mmMs] = [med['forward']!, med['train step']!, med[`matmul ${N}³`]!];
  const smallGflops = (2 * B * S * D * D) / (med[`matmul ${B * S}×${D}×${D}`]! * 1e6);
  console.log(`matmul ${B * S}×${D}×${D}: ${smallGflops.toFixed(1)} GFLOP/s (${(smallGflops / ((2 * N ** 3) / (mmMs * 1e6))).toFixed(2)} of the ${N}³ rate)`);

  const stepGflops = stepFlops / (stepMs * 1e6);
  const matmulGflops = (2 * N ** 3) / (mmMs * 1e6);
  console.log(`provider ${provider}, forward ${(fwdFlops / (forwardMs * 1e6)).toFixed(1)} GFLOP/s`);
  const r = (v: number, d = 2): number => Number(v.toFixed(d));
  console.log(JSON.stringify({
    bench: 'engine', forward_ms: r(forwardMs, 1), step_ms: r(stepMs, 1), step_over_forward: r(stepMs / forwardMs),
    tokens_per_s: r((B * S) / (stepMs / 1000), 0), step_gflops: r(stepGflops, 1), matmul_gflops: r(matmulGflops, 1),
    ratio_vs_matmul: r(stepGflops / matmulGflops), rss_mb: r(process.memoryUsage().rss / 2 ** 20, 0),
  }));
}

await main();
