/**
 * ONNX emission and the runtime: deterministic bytes, external data, float16 storage of frozen
 * weights, session caching, and clear errors for a missing execution provider.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { grad } from '../../daemon/engine/autodiff.js';
import { frozen, graph, input, output, param } from '../../daemon/engine/graph.js';
import * as O from '../../daemon/engine/ops.js';
import { toOnnx } from '../../daemon/engine/onnx.js';
import { createSession, cudaInstalled, f32, modelHash, numbers, run } from '../../daemon/engine/sessions.js';
import { randomTensor, tensor } from '../../daemon/engine/tensor.js';
import { trainProgram } from '../../daemon/engine/train.js';

/** A small program with symbolic dims, a frozen weight, a parameter, its backward and AdamW. */
function program(): Uint8Array {
  const g = graph('det');
  const x = input(g, 'x', 'float32', ['batch', 'seq', 8]);
  const w = frozen(g, 'w', randomTensor('float32', [8, 8], 1));
  const a = param(g, 'lora_a', 'float32', [8, 2]);
  const b = param(g, 'lora_b', 'float32', [2, 8]);
  const h = O.add(O.matmul(x, w), O.matmul(O.matmul(x, a), b));
  const loss = O.meanAll(O.logSoftmax(O.gelu(h, 'tanh'), -1));
  return toOnnx(trainProgram({ loss, params: [a, b], optimizer: { maxGradNorm: 1 } }).graph).bytes;
}

t.test('the same program gives the same bytes twice', async (t) => {
  const one = program();
  const two = program();
  t.ok(one.length > 1000);
  t.equal(modelHash(one), modelHash(two));
  t.same(Buffer.from(one), Buffer.from(two));
});

t.test('sessions are cached by the hash of the model bytes', async (t) => {
  const s1 = await createSession(program());
  const s2 = await createSession(program());
  t.equal(s1, s2);
  const s3 = await createSession(program(), { threads: 1 });
  t.not(s1, s3, 'other options, other session');
});

t.test('external data: a tensor forced external loads and computes the same', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-ext-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const build = () => {
    const g = graph('ext');
    const x = input(g, 'x', 'float32', [2, 64]);
    const w = frozen(g, 'w', randomTensor('float32', [64, 32], 5));
    output(O.matmul(x, w), 'y');
    return g;
  };
  const inline = toOnnx(build());
  const ext = toOnnx(build(), { external: { dir, file: 'weights.bin', thresholdBytes: 0 } });
  t.equal(ext.externalDir, dir, 'the folder onnxruntime reads the data from');
  t.ok(ext.bytes.length < inline.bytes.length - 8000, 'the weight bytes left the model');
  const data = readFileSync(join(dir, 'weights.bin'));
  t.equal(data.length, 64 * 32 * 4, 'the weights file holds the tensor');
  const feeds = { x: f32([2, 64], Array.from({ length: 128 }, (_, i) => Math.sin(i))) };
  const a = await run(await createSession(inline.bytes), feeds);
  const b = await run(await createSession(ext), feeds);
  t.same(numbers(b['y']!), numbers(a['y']!));
});

t.test('float16 storage of frozen weights: half the bytes, values within half precision', async (t) => {
  const w = randomTensor('float32', [16, 16], 7);
  const build = (storage?: 'float16') => {
    const g = graph('f16');
    const x = input(g, 'x', 'float32', [1, 16]);
    output(O.matmul(x, frozen(g, 'w', w, storage ? { storage } : {})), 'y');
    return toOnnx(g).bytes;
  };
  const full = build();
  const half = build('float16');
  t.ok(half.length < full.length - 400);
  const feeds = { x: f32([1, 16], Array.from({ length: 16 }, (_, i) => (i % 5) - 2)) };
  const a = numbers((await run(await createSession(full), feeds))['y']!);
  const b = numbers((await run(await createSession(half), feeds))['y']!);
  const err = Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
  t.ok(err < 1e-2 && err > 0, `max |Δ| ${err.toExponential(2)}`);
});

t.test('a missing CUDA provider is a clear error naming how to install it', { skip: cudaInstalled() ? 'CUDA provider installed here' : false }, async (t) => {
  await t.rejects(createSession(program(), { provider: 'cuda' }), {
    code: 'ENGINE_PROVIDER_MISSING', message: /ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci/,
  });
});

t.test('a WebGPU provider that cannot start names Vulkan', async (t) => {
  try {
    await createSession(program(), { provider: 'webgpu' });
    t.pass('webgpu started on this machine');
  } catch (err) {
    t.match(err, { code: 'ENGINE_PROVIDER_MISSING', message: /Vulkan/ });
  }
});

t.test('an unknown op is reported as a rejected model, with the op name', async (t) => {
  const g = graph('bad');
  const x = input(g, 'x', 'float32', [2]);
  output({ ...O.identity(x) }, 'y');
  g.nodes[0]!.op = 'NoSuchOp';
  await t.rejects(createSession(toOnnx(g).bytes), { code: 'ENGINE_INVALID_GRAPH', message: /NoSuchOp/ });
});

t.test('an omitted optional input at the end is left out of the node: float32 LayerNormalization without a bias runs', async (t) => {
  // Written as a trailing '', onnxruntime 1.30's extended graph optimizations killed the process
  // (SIGSEGV at session creation) for this node; float64 and optimization level 'basic' were fine.
  const build = (bias: boolean): Uint8Array => {
    const g = graph(bias ? 'ln_bias' : 'ln_no_bias');
    const x = input(g, 'x', 'float32', [2, 4]);
    const scale = frozen(g, 'scale', randomTensor('float32', [4], 2, 0.5, 1.5));
    output(O.layerNorm(x, scale, bias ? frozen(g, 'bias', tensor('float32', [4], [0, 0, 0, 0])) : undefined), 'y');
    return toOnnx(g).bytes;
  };
  const feeds = { x: f32([2, 4], [1, -2, 3, 0.5, 2, 2, -1, 0]) };
  const without = numbers((await run(await createSession(build(false)), feeds))['y']!);
  const zeroBias = numbers((await run(await createSession(build(true)), feeds))['y']!);
  t.same(without, zeroBias);
  t.ok(without.some((v) => v !== 0));
});

t.test('grad of an unreachable parameter is zeros', async (t) => {
  const g = graph('unreach');
  const x = param(g, 'x', 'float32', [3]);
  const y = param(g, 'y', 'float32', [3]);
  const [, dy] = grad(O.sumAll(O.mul(x, x)), [x, y]);
  output(dy!, 'dy');
  const out = await run(await createSession(toOnnx(g).bytes), { x: f32([3], [1, 2, 3]), y: f32([3], [1, 1, 1]) });
  t.same(numbers(out['dy']!), [0, 0, 0]);
  t.same(tensor('float32', [1], [1]).dims, [1]);
});

t.test('engine config: defaults to cpu, rejects unknown providers with a clear path', async (t) => {
  const { engineConfigSchema, runtimeOptions } = await import('../../daemon/engine/engine-config.js');
  t.same(runtimeOptions(engineConfigSchema.parse({})), { provider: 'cpu', threads: 0, graphOptimizationLevel: 'all', spinning: false });
  const bad = engineConfigSchema.safeParse({ provider: 'tpu' });
  t.notOk(bad.success);
  t.match(bad.error?.issues[0]?.path, ['provider']);
  t.same(runtimeOptions(engineConfigSchema.parse({ provider: 'webgpu', keepOnDevice: true })).preferredOutputLocation, 'gpu-buffer');
});
