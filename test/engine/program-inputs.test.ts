/**
 * Declared program inputs at run time (their compile-time side is test/align/program-inputs.typecheck.ts):
 * declareInputs makes graph inputs of the declared names, dtypes and shapes in order; a train
 * program built with a declaration fails at build time when the graph has an input the
 * declaration lacks, lacks a declared one, or has it in another dtype; runProgram refuses feeds
 * that are not exactly the declared ones (a wider object type-checks) before onnxruntime runs.
 */
import t from 'tap';
import { graph, input, output, param } from '../../daemon/engine/graph.js';
import * as O from '../../daemon/engine/ops.js';
import { toOnnx } from '../../daemon/engine/onnx.js';
import { createSession, f32, i64, numbers } from '../../daemon/engine/sessions.js';
import { declareInputs, float32, int64, runProgram } from '../../daemon/engine/program-inputs.js';
import { gradProgram, trainProgram } from '../../daemon/engine/train.js';

const decl = { x: float32(['batch', 3]), pick: int64(['k']), scale: float32([]) } as const;

t.test('declareInputs declares every input in order, with its dtype and shape', async (t) => {
  const g = graph('decl');
  const x = declareInputs(g, decl);
  t.same(g.inputs, ['x', 'pick', 'scale']);
  t.same([x.x.dtype, x.x.shape], ['float32', ['batch', 3]]);
  t.same([x.pick.dtype, x.pick.shape], ['int64', ['k']]);
  t.same([x.scale.dtype, x.scale.shape], ['float32', []]);
});

function lossOn(g: ReturnType<typeof graph>, x: { x: ReturnType<typeof input>; scale: ReturnType<typeof input> }) {
  const w = param(g, 'w', 'float32', [3]);
  return { loss: O.mul(O.sumAll(O.mul(x.x, w)), x.scale), w };
}

t.test('a train program\'s graph must have exactly its declared data inputs', async (t) => {
  const ok = graph('ok');
  const x = declareInputs(ok, decl);
  const { loss, w } = lossOn(ok, x);
  output(O.gather(x.x, x.pick), 'picked');
  t.same(trainProgram({ loss, params: [w], inputs: decl }).inputs, decl, 'the declaration travels with the program');

  const extra = graph('extra');
  const e = declareInputs(extra, decl);
  input(extra, 'stray', 'float32', []);
  const l2 = lossOn(extra, e);
  t.throws(() => gradProgram({ loss: l2.loss, params: [l2.w], inputs: decl }), { code: 'ENGINE_INVALID_GRAPH', message: /graph input 'stray' is not in the program's declaration/ });

  const short = graph('short');
  const s = { x: input(short, 'x', 'float32', ['batch', 3]), scale: input(short, 'scale', 'float32', []) };
  const l3 = lossOn(short, s);
  t.throws(() => trainProgram({ loss: l3.loss, params: [l3.w], inputs: decl }), { code: 'ENGINE_INVALID_GRAPH', message: /declared input 'pick' is not a graph input/ });

  const typed = graph('typed');
  const y = { x: input(typed, 'x', 'float32', ['batch', 3]), scale: input(typed, 'scale', 'float32', []) };
  input(typed, 'pick', 'float32', ['k']);
  const l4 = lossOn(typed, y);
  t.throws(() => trainProgram({ loss: l4.loss, params: [l4.w], inputs: decl }), { code: 'ENGINE_INVALID_GRAPH', message: /input 'pick' is float32, declared int64/ });
});

t.test('runProgram feeds exactly the declared inputs', async (t) => {
  const g = graph('run');
  const x = declareInputs(g, decl);
  output(O.mul(O.gather(O.reduceSum(x.x, [1], false), x.pick), x.scale), 'y');
  const program = { session: await createSession(toOnnx(g).bytes), inputs: decl };
  const feeds = { x: f32([2, 3], [1, 2, 3, 4, 5, 6]), pick: i64([1], [1]), scale: f32([], [2]) };
  t.same(numbers((await runProgram(program, feeds))['y']!), [30]);
  const wider = { ...feeds, stray: f32([], [0]) };
  await t.rejects(runProgram(program, wider), { code: 'INTERNAL', message: /feed 'stray' is not a declared input/ });
  const { scale: _, ...missing } = feeds;
  await t.rejects(runProgram(program, missing as typeof feeds), { code: 'INTERNAL', message: /no feed for declared input 'scale'/ });
});
