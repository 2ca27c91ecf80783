/**
 * onnxruntime-node sessions: execution provider by config, threads and graph-optimisation level,
 * a cache keyed by the hash of the model bytes and options, and tensor helpers.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { totalmem } from 'node:os';
import * as ort from 'onnxruntime-node';
import { AligndError, errorMessage } from '../base/errors.js';
import type { Emitted } from './onnx.js';
import { type DType, type HostTensor, type TensorData, sizeOf } from './tensor.js';

export type Provider = 'cpu' | 'cuda' | 'webgpu';

export interface RuntimeOptions {
  provider?: Provider;
  /** Intra-op threads (0 = onnxruntime's default: one per core). */
  threads?: number;
  /** Benches only: onnxruntime's profiler writes a trace to `<prefix>_<date>.json` at session.endProfiling() (such a session is not cached). */
  profileFilePrefix?: string;
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /**
   * Let idle intra-op threads spin-wait for the next op (onnxruntime's default). Off by default
   * here: alignd alternates several sessions (policy, reference, reward model), and one session's
   * spinning threads take the cores from the next one's run.
   */
  spinning?: boolean;
  /** WebGPU only: keep outputs on the device ('gpu-buffer') between runs. */
  preferredOutputLocation?: 'cpu' | 'gpu-buffer';
  /**
   * Let the CPU provider pre-pack constant MatMul weights into its GEMM layout (onnxruntime's
   * default). Off when unset here: each session packs into a private copy, so a model's weights
   * would be held once per program instead of once (1 GB of float32 weights became 1 GB per session
   * in the measurement in README.md); half-precision weights are never packed (their Cast output is
   * not a constant). loadModel turns it on when the copies stay small (prepackingFits).
   */
  prepacking?: boolean;
  /**
   * onnxruntime's CPU memory arena (its default: on): freed activation blocks are kept for the next
   * run instead of going back to the system. See README.md for the measured effect on steady memory.
   */
  memArena?: boolean;
  /**
   * Plan one allocation per input shape from the first run (onnxruntime's default: on). Off by
   * default here: batches change length every step, and each new shape plans its own pattern.
   */
  memPattern?: boolean;
}

/** Sessions of one model that hold its base weights at once: log-probs, generation, the train step, KL, hidden states. */
export const MODEL_SESSIONS = 5;
/** The share of the machine's memory the prepacked copies of a model's weights may take. */
export const PREPACK_SHARE = 1 / 8;

/**
 * Whether to prepack a model's programs: on when a packed copy of its float32 matrices
 * (`packableBytes`) in each of MODEL_SESSIONS sessions stays within PREPACK_SHARE of the memory.
 * Prepacking makes float32 MatMul about 2× faster on small row counts, and its cost is one copy of
 * the weights per session (README.md § prepacking).
 */
export function prepackingFits(packableBytes: number, memoryBytes: number = totalmem()): boolean {
  return packableBytes * MODEL_SESSIONS <= PREPACK_SHARE * memoryBytes;
}

export type Session = ort.InferenceSession;
export type OrtTensor = ort.Tensor;

const INSTALL: Record<Provider, string> = {
  cpu: 'the CPU provider is bundled with onnxruntime-node; reinstall it with `npm ci`',
  cuda: 'install the CUDA provider with `ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci` (needs CUDA 12 and cuDNN 9), or set engine provider to cpu',
  webgpu: 'the WebGPU provider needs Vulkan on Linux: install libvulkan1 and a Vulkan driver whose device Dawn accepts (the NVIDIA driver, or Mesa ≥ 25\'s lavapipe; Debian 12\'s mesa-vulkan-drivers 22.3 answers "No supported adapters", see bench/README.md), or set engine provider to cpu',
};

const cache = new Map<string, Promise<Session>>();

/** What a session is made from: model bytes, the same with the folder of its external data (toOnnx's result), or a model file's path. */
export type ModelSource = Uint8Array | Emitted | string;

function cacheKey(model: ModelSource, o: RuntimeOptions): string {
  const h = createHash('sha256');
  if (typeof model === 'string') h.update(`path:${model}`);
  else if (model instanceof Uint8Array) h.update(model);
  else h.update(model.bytes).update(`dir:${model.externalDir ?? ''}`);
  h.update(JSON.stringify([o.provider ?? 'cpu', o.threads ?? 0, o.graphOptimizationLevel ?? 'all', o.preferredOutputLocation ?? 'cpu', o.spinning ?? false,
    o.prepacking ?? false, o.memArena ?? true, o.memPattern ?? false]));
  return h.digest('hex');
}

/** sha256 of model bytes: names a program in logs and caches. */
export function modelHash(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function looksLikeMissingProvider(provider: Provider, message: string): boolean {
  if (provider === 'cpu') return false;
  return /provider|vulkan|cuda|libcu|webgpu|dawn|adapter|not (?:found|supported|available)|cannot open shared object/i.test(message);
}

/**
 * A session for a program. Sessions are cached by sha256 of the bytes (and external-data folder)
 * and options, so building the same program twice reuses one session.
 */
export function createSession(model: ModelSource, o: RuntimeOptions = {}): Promise<Session> {
  const key = cacheKey(model, o);
  if (o.profileFilePrefix !== undefined) return openSession(model, o);
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  const made = openSession(model, o);
  cache.set(key, made);
  made.catch(() => cache.delete(key));
  return made;
}

async function openSession(model: ModelSource, o: RuntimeOptions): Promise<Session> {
  const provider = o.provider ?? 'cpu';
  if (provider === 'cuda' && !cudaInstalled()) {
    throw new AligndError('ENGINE_PROVIDER_MISSING', 'onnxruntime CUDA execution provider is not installed',
      { input: 'engine.provider=cuda', action: INSTALL.cuda });
  }
  const opts: ort.InferenceSession.SessionOptions = {
    executionProviders: [provider],
    graphOptimizationLevel: o.graphOptimizationLevel ?? 'all',
    intraOpNumThreads: o.threads ?? 0,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    enableCpuMemArena: o.memArena ?? true,
    enableMemPattern: o.memPattern ?? false,
  };
  if (o.profileFilePrefix !== undefined) Object.assign(opts, { enableProfiling: true, profileFilePrefix: o.profileFilePrefix });
  if (o.preferredOutputLocation !== undefined) opts.preferredOutputLocation = o.preferredOutputLocation;
  // Config entries (onnxruntime_session_options_config_keys.h); the binding joins nested keys with '.'.
  const session: Record<string, unknown> = {
    intra_op: { allow_spinning: o.spinning ? '1' : '0' },
    disable_prepacking: o.prepacking ? '0' : '1',
  };
  // Model bytes with external data: the folder its locations are relative to (a model loaded from
  // bytes has no folder of its own), which onnxruntime also confines them to.
  if (typeof model !== 'string' && !(model instanceof Uint8Array) && model.externalDir !== undefined) {
    session['model_external_initializers_file_folder_path'] = model.externalDir;
  }
  opts.extra = { session };
  const source = typeof model === 'string' ? model : model instanceof Uint8Array ? model : model.bytes;
  try {
    return typeof source === 'string' ? await ort.InferenceSession.create(source, opts) : await ort.InferenceSession.create(source, opts);
  } catch (err) {
    const msg = errorMessage(err);
    if (looksLikeMissingProvider(provider, msg)) {
      throw new AligndError('ENGINE_PROVIDER_MISSING', `onnxruntime ${provider} execution provider could not start: ${msg}`,
        { input: `engine.provider=${provider}`, action: INSTALL[provider], cause: err });
    }
    throw new AligndError('ENGINE_INVALID_GRAPH', `onnxruntime rejected the model: ${msg}`,
      { input: typeof source === 'string' ? source : `model ${modelHash(source).slice(0, 12)}`, action: 'this is a bug in the program builder; report it with the message', cause: err });
  }
}

/** The CUDA provider is a shared library the install script downloads next to the binding. */
export function cudaInstalled(): boolean {
  try {
    const dir = new URL(`../bin/napi-v6/${process.platform}/${process.arch}/`, import.meta.resolve('onnxruntime-node'));
    return existsSync(new URL('libonnxruntime_providers_cuda.so', dir)) || existsSync(new URL('onnxruntime_providers_cuda.dll', dir));
  } catch {
    return false;
  }
}

/** Drop every cached session (frees their memory once no caller holds them). */
export async function clearSessions(): Promise<void> {
  const all = [...cache.values()];
  cache.clear();
  for (const p of all) {
    try { await (await p).release(); } catch { /* already failed or released */ }
  }
}

/** Run a session; errors carry the program and the feeds' names. */
export async function run(session: Session, feeds: Record<string, OrtTensor>, fetches?: string[]): Promise<Record<string, OrtTensor>> {
  try {
    return fetches === undefined ? await session.run(feeds) : await session.run(feeds, fetches);
  } catch (err) {
    throw new AligndError('ENGINE_RUN_FAILED', `session run failed: ${errorMessage(err)}`,
      { input: `feeds ${Object.keys(feeds).join(',')}`, action: 'check the feeds\' dtypes and shapes against the program inputs', cause: err });
  }
}

// ---------------------------------------------------------------- tensor helpers

const ORT_TYPE: Record<Exclude<DType, 'bfloat16'>, ort.Tensor.Type> = {
  float32: 'float32', float64: 'float64', float16: 'float16', int64: 'int64', int32: 'int32', bool: 'bool',
};

/** Host tensor → onnxruntime tensor (shares the buffer). */
export function toOrt(t: HostTensor): OrtTensor {
  if (t.dtype === 'bfloat16') {
    throw new AligndError('ENGINE_INVALID_GRAPH', 'onnxruntime-node cannot feed bfloat16 tensors', { action: 'keep bfloat16 for frozen weights (initializers); feed float32' });
  }
  return new ort.Tensor(ORT_TYPE[t.dtype], t.data as never, t.dims);
}

/** onnxruntime tensor → host tensor (shares the buffer; downloads from the GPU if needed). */
export async function fromOrt(t: OrtTensor): Promise<HostTensor> {
  const dtype = t.type as DType;
  const data = (t.location === 'cpu' ? t.data : await t.getData()) as TensorData;
  return { dtype, dims: [...t.dims], data };
}

export function f32(dims: number[], values?: ArrayLike<number>): OrtTensor {
  return new ort.Tensor('float32', values === undefined ? new Float32Array(sizeOf(dims)) : Float32Array.from(values), dims);
}

export function f64(dims: number[], values?: ArrayLike<number>): OrtTensor {
  return new ort.Tensor('float64', values === undefined ? new Float64Array(sizeOf(dims)) : Float64Array.from(values), dims);
}

export function i64(dims: number[], values: ArrayLike<number>): OrtTensor {
  return new ort.Tensor('int64', BigInt64Array.from(Array.from(values), (v) => BigInt(v)), dims);
}

/** A scalar float tensor of `dtype` (learning rate, step). */
export function scalarOrt(dtype: 'float32' | 'float64', v: number): OrtTensor {
  return dtype === 'float32' ? f32([], [v]) : f64([], [v]);
}

/** Numbers of a float or integer onnxruntime tensor on the host. */
export function numbers(t: OrtTensor): number[] {
  const d = t.data as ArrayLike<number | bigint>;
  return Array.from(d, Number);
}
