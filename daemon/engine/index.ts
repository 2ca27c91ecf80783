/** The training engine's public surface (see README.md beside this file). */
export {
  type Attr, A, type Dim, type ExternalTensor, type Graph, type Initializer, type Node, type Shape, type Value, constant, emit, frozen, frozenExternal, graph, input,
  isExternal, output, param, recompute, value, withShape,
} from './graph.js';
export * as ops from './ops.js';
export { grad, type GradOptions } from './autodiff.js';
export { vjp, type Rule, type VjpContext, unbroadcast } from './vjp.js';
export { type AdamWConfig, type ProgramInfo, type TrainSpec, adamw, applyProgram, globalNorm, gradProgram, names, trainProgram } from './train.js';
export {
  type Declared, type Feeds, type InputDecl, type InputDecls, type NoInputs, type Program, checkDeclared, checkFeeds, declareInputs, float32, floatInput, int64, runProgram,
} from './program-inputs.js';
export { type Accumulator, type StepResult, type TrainState, accumulate, applyAccumulated, initAccumulator, initState, trainStep } from './accumulate.js';
export { type Emitted, type ExternalData, IR_VERSION, OPSET, toOnnx, writeExternalFile } from './onnx.js';
export {
  MODEL_SESSIONS, type ModelSource, type OrtTensor, PREPACK_SHARE, type Provider, type RuntimeOptions, type Session, clearSessions, createSession,
  cudaInstalled, f32, f64, fromOrt, i64, modelHash, numbers, prepackingFits, run, scalarOrt, toOrt,
} from './sessions.js';
export { type DType, type HostTensor, bytesPerElement, fromBfloat16, fromHalf, isHalf, randomTensor, tensor, toBfloat16, toFloat64, toHalf } from './tensor.js';
export { productFlops } from './flops.js';
export { type EngineConfig, engineConfigSchema, runtimeOptions } from './engine-config.js';
