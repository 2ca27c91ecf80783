/**
 * A loaded model: checkpoint + tokenizer + the inference programs on onnxruntime, with sessions
 * built on first use and cached per (program, LoRA shape). Adapters are fed as inputs, so swapping
 * one of the same rank, alpha and targets reuses the session; `null` runs the base model alone
 * (its own program, no LoRA work).
 *
 * For train steps (align/), `trainGraph()` gives a fresh graph with the frozen base declared, and
 * the graph functions of inference-programs.ts / forward-graph.ts build the loss on it; `batchFeeds` and
 * `loraHostTensors` make the feeds and the initial train state.
 */
import * as ort from 'onnxruntime-node';
import { AligndError } from '../base/errors.js';
import {
  type Feeds, type Graph, type HostTensor, type OrtTensor, type Provider, type RuntimeOptions, type Session, createSession, graph, i64, run,
  prepackingFits, runProgram, toOnnx,
} from '../engine/index.js';
import { type Checkpoint, loadCheckpoint } from './hf-checkpoint.js';
import type { ModelSpec } from './hf-config.js';
import { type BaseWeights, type FloatType, type GraphWeights, declareBaseWeights, fusedKernelsFor, loraNames } from './forward-graph.js';
import { type GenerateOptions, generateTokens } from './kv-generation.js';
import type { LoraAdapter, LoraConfig } from './lora.js';
import { IO, type LogProbInputDecl, type ProgramInputs, type ProgramKind, type TokenInputs, buildProgram, programInputs } from './inference-programs.js';
import { type PackedBatch, maxPosition } from './packing.js';
import type { PackedInputDecl } from './response-programs.js';
import type { ModelTokenizer, Prompt } from './tokenizer.js';
import { graphWeights, packableBytes } from './weight-files.js';

/** A right-padded token batch (LogProbBatch from batch.ts is one). */
export interface TokenBatch {
  batch: number;
  length: number;
  inputIds: Int32Array;
  attentionMask: Float32Array;
}

export interface TargetBatch extends TokenBatch {
  targets: Int32Array;
  targetMask: Float32Array;
}

/** Session options (engine RuntimeOptions) and where the weights come from. */
export interface LoadOptions extends RuntimeOptions {
  /** F32 checkpoints: base weights stored as float16 (half the memory; arithmetic stays float32). */
  storage?: 'float16';
  /**
   * Where converted weights go when the checkpoint's files cannot be read in place, reused by
   * content key (weight-files.ts); default: a temporary folder removed by close() or at exit.
   */
  programDir?: string;
}

export interface Model {
  dir: string;
  spec: ModelSpec;
  checkpoint: Checkpoint;
  tokenizer: ModelTokenizer | null;
  /** Where the base weights are for the programs (the same files for every program). */
  weights: GraphWeights;
  /** Pad id for batches: tokenizer pad (else eos), config pad, else 0. */
  padId: number;
  runtime: RuntimeOptions;
  /** Per-token [B·T] (zero off the response) and summed [B] response log-probs. */
  logprobs(batch: TargetBatch, adapter?: LoraAdapter | null): Promise<{ tokenLogps: Float32Array; seqLogps: Float32Array }>;
  /**
   * Response log-probs of a packed batch (packing.ts): per response token [N] in the batch's
   * order, and summed per sequence [S]; the head runs at response positions only.
   */
  responseLogprobs(batch: PackedBatch, adapter?: LoraAdapter | null): Promise<{ tokenLogps: Float32Array; seqLogps: Float32Array }>;
  /** Final hidden state [B·H] at each row's last real token. */
  hiddenStates(batch: TokenBatch, adapter?: LoraAdapter | null): Promise<Float32Array>;
  /** Next-token log-probs over the vocabulary [B·K·V] after each of positions [B·K]. */
  vocabLogProbs(batch: TokenBatch, positions: ArrayLike<number>, adapter?: LoraAdapter | null): Promise<Float32Array>;
  /** Exact KL(p‖q) [B·K] at the positions, p and q each base + an adapter (or the base alone). */
  tokenKl(batch: TokenBatch, positions: ArrayLike<number>, p: LoraAdapter | null, q: LoraAdapter | null): Promise<Float64Array>;
  /** Logits [B·T·V] of every position (tests, debugging). */
  logits(batch: TokenBatch, adapter?: LoraAdapter | null): Promise<Float32Array>;
  /** Continue token prompts with a KV cache; new tokens per prompt. */
  generate(prompts: readonly (readonly number[])[], opts: GenerateOptions, adapter?: LoraAdapter | null): Promise<number[][]>;
  /**
   * Chat prompts → response texts: prompts rendered with the model's chat template, generation
   * stopping at the end-of-turn/eos tokens unless `stopIds` says otherwise, special tokens dropped.
   */
  generateText(prompts: readonly Prompt[], opts: GenerateOptions, adapter?: LoraAdapter | null): Promise<{ text: string; ids: number[] }[]>;
  /** The session of a program (built and cached on first use). */
  session(kind: ProgramKind, lora: LoraConfig | null): Promise<Session>;
  /**
   * A fresh graph with this model's frozen base declared, for train-step programs (composite
   * kernels, differentiable) and the align stage's own forward-only programs (KL, reward scores:
   * `kernels` 'fused', the provider's fused attention and RMSNorm, float32 only).
   */
  trainGraph(name: string, dtype?: FloatType, kernels?: 'composite' | 'fused'): { g: Graph; base: BaseWeights };
  /** A session for a graph built on trainGraph() (its weights are this model's files). */
  compile(g: Graph): Promise<Session>;
  /**
   * No new sessions after this; converted weights in a temporary folder are removed (sessions
   * already open keep their mapping of the file until they are released).
   */
  close(): void;
}

/** What makes two LoRA configs need different programs. */
export function loraShapeKey(cfg: LoraConfig | null): string {
  if (cfg === null) return 'base';
  return JSON.stringify([cfg.r, cfg.loraAlpha, cfg.useRslora, [...cfg.targetModules].sort()]);
}

/** Feeds of a right-padded batch: input_ids, attention_mask and, with targets, targets and target_mask. */
export function batchFeeds(b: TargetBatch): Feeds<LogProbInputDecl>;
export function batchFeeds(b: TokenBatch): Feeds<TokenInputs>;
export function batchFeeds(b: TokenBatch | TargetBatch): Feeds<TokenInputs> | Feeds<LogProbInputDecl> {
  const dims = [b.batch, b.length];
  const tokens: Feeds<TokenInputs> = {
    [IO.inputIds]: i64(dims, b.inputIds),
    [IO.attentionMask]: new ort.Tensor('float32', b.attentionMask, dims),
  };
  if (!('targets' in b)) return tokens;
  return { ...tokens, [IO.targets]: i64(dims, b.targets), [IO.targetMask]: new ort.Tensor('float32', b.targetMask, dims) };
}

/** Feeds of a packed batch (packing.ts) for the response log-prob programs. */
export function packedFeeds(b: PackedBatch): Feeds<PackedInputDecl> {
  const dims = [b.rows, b.length];
  const N = b.responseIndex.length;
  return {
    input_ids: i64(dims, b.inputIds), position_ids: i64(dims, b.positionIds), segment_ids: i64(dims, b.segmentIds), branch_ids: i64(dims, b.branchIds),
    response_index: i64([N], b.responseIndex), response_targets: i64([N], b.responseTargets),
    response_owner: new ort.Tensor('float32', b.responseOwner, [b.sequences, N]),
  };
}

/** An adapter's A/B tensors as host tensors under their graph names (a train state's initial values). */
export function loraHostTensors(adapter: LoraAdapter, prefix = ''): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  const r = adapter.config.r;
  for (const [path, pair] of adapter.pairs) {
    const n = loraNames(prefix, path);
    out[n.a] = { dtype: 'float32', dims: [r, pair.module.inFeatures], data: pair.a };
    out[n.b] = { dtype: 'float32', dims: [pair.module.outFeatures, r], data: pair.b };
  }
  return out;
}

export function loraFeeds(adapter: LoraAdapter, prefix = ''): Record<string, OrtTensor> {
  const out: Record<string, OrtTensor> = {};
  for (const [k, t] of Object.entries(loraHostTensors(adapter, prefix))) out[k] = new ort.Tensor('float32', t.data as Float32Array, t.dims);
  return out;
}

/**
 * An adapter from trained tensors (a train state's params, by graph name): the config and module
 * list of `like`, the values from `tensors`. Copies, so the adapter outlives the train state.
 */
export function adapterFromTensors(like: LoraAdapter, tensors: Record<string, { data: unknown }>, prefix = ''): LoraAdapter {
  const pairs = new Map<string, LoraAdapter['pairs'] extends Map<string, infer P> ? P : never>();
  for (const [path, pair] of like.pairs) {
    const n = loraNames(prefix, path);
    const a = tensors[n.a]?.data;
    const b = tensors[n.b]?.data;
    if (!(a instanceof Float32Array) || !(b instanceof Float32Array) || a.length !== pair.a.length || b.length !== pair.b.length) {
      throw new AligndError('ADAPTER_INVALID', `no float32 LoRA tensors of the right size for ${path} (${n.a}, ${n.b})`, {
        action: 'pass the train state of a program built with this adapter\'s LoRA config',
      });
    }
    pairs.set(path, { module: pair.module, a: a.slice(), b: b.slice() });
  }
  return { config: like.config, pairs };
}

/** Only the token part of a batch (a TargetBatch passed where tokens are fed). */
const tokensOf = (b: TokenBatch): TokenBatch => ({ batch: b.batch, length: b.length, inputIds: b.inputIds, attentionMask: b.attentionMask });

/**
 * The pad id batches are filled with. Checked against the embedding rows here, at load: an id
 * past the vocabulary (a pad token added to the tokenizer without resizing the embeddings, as
 * often done for GPT-2) would otherwise fail deep inside onnxruntime's Gather on the first batch.
 */
function padIdOf(ck: Checkpoint, dir: string): number {
  const fromTokenizer = ck.tokenizer?.padTokenId;
  const pad = fromTokenizer ?? ck.spec.padTokenId ?? ck.spec.eosTokenIds[0] ?? 0;
  const source = fromTokenizer !== null && fromTokenizer !== undefined ? `the tokenizer's pad token ${JSON.stringify(ck.tokenizer?.padToken ?? ck.tokenizer?.eosToken)}`
    : ck.spec.padTokenId !== null ? 'config.json pad_token_id' : 'config.json eos_token_id';
  if (!(Number.isInteger(pad) && pad >= 0 && pad < ck.spec.vocabSize)) {
    throw new AligndError('MODEL_INVALID', `pad id ${pad} (${source}) is outside the model's vocabulary of ${ck.spec.vocabSize} embeddings`, {
      input: dir, action: 'resize the token embeddings after adding a pad token (model.resize_token_embeddings(len(tokenizer))), or set pad_token to an existing token such as eos',
    });
  }
  const tok = ck.tokenizer;
  for (const [what, id] of [['bos', tok?.bosTokenId], ['eos', tok?.eosTokenId]] as const) {
    if (id !== null && id !== undefined && id >= ck.spec.vocabSize) {
      throw new AligndError('MODEL_INVALID', `the tokenizer's ${what} id ${id} is outside the model's vocabulary of ${ck.spec.vocabSize} embeddings`, {
        input: dir, action: 'the tokenizer does not belong to this checkpoint, or the embeddings were not resized after adding tokens',
      });
    }
  }
  return pad;
}

/** Load a Hugging Face checkpoint directory (the tiny model's too) and prepare its programs lazily. */
export function loadModel(dir: string, opts: LoadOptions = {}): Model {
  const checkpoint = loadCheckpoint(dir);
  const { spec } = checkpoint;
  const { storage, programDir, ...session0 } = opts;
  const weights = graphWeights(spec, checkpoint.weights, dir, { ...(storage === undefined ? {} : { storage }), ...(programDir === undefined ? {} : { dir: programDir }) });
  // Prepacking copies the float32 matrices into every session: on only while those copies stay small (engine README § prepacking).
  const prepacking = opts.prepacking ?? prepackingFits(packableBytes(weights));
  const provider = opts.provider ?? 'cpu';
  const runtime: RuntimeOptions = { ...session0, provider, threads: opts.threads ?? 0, prepacking };
  const sessions = new Map<string, Promise<Session>>();
  /** The forward-only programs' attention and RMSNorm kernels on this provider. */
  const fused = fusedKernelsFor(provider, spec);
  let closed = false;
  const compile = (g: Graph): Promise<Session> => {
    if (closed) {
      return Promise.reject(new AligndError('INTERNAL', `model ${dir} is closed: no new programs`, { action: 'load the model again (loadModel) to build programs' }));
    }
    return createSession(toOnnx(g), runtime);
  };

  const session = (kind: ProgramKind, lora: LoraConfig | null): Promise<Session> => {
    const key = `${kind}|${loraShapeKey(lora)}`;
    let s = sessions.get(key);
    if (s === undefined) {
      s = compile(buildProgram(kind, weights, lora, { kernels: fused }));
      sessions.set(key, s);
      s.catch(() => sessions.delete(key));
    }
    return s;
  };

  const declared = programInputs();
  /** Run one of the declared programs: its feeds are typed by its declaration. */
  const runKind = async <K extends keyof ProgramInputs>(kind: K, adapter: LoraAdapter | null, feeds: Feeds<ProgramInputs[K]>): Promise<Record<string, OrtTensor>> => {
    const s = await session(kind, adapter?.config ?? null);
    return runProgram({ session: s, inputs: declared[kind] }, feeds, adapter === null ? {} : loraFeeds(adapter));
  };

  const checkBatch = (b: TokenBatch): void => {
    if (b.length > spec.maxPositions) {
      throw new AligndError('CONFIG_INVALID', `batch of ${b.length} tokens per row exceeds the model's ${spec.maxPositions} positions`, {
        input: dir, action: 'pack batches with maxLength at most max_position_embeddings',
      });
    }
  };

  const positionsTensor = (b: TokenBatch, positions: ArrayLike<number>): OrtTensor => {
    if (positions.length % b.batch !== 0) {
      throw new AligndError('INTERNAL', `positions has ${positions.length} entries, not a multiple of the batch size ${b.batch}`);
    }
    for (let i = 0; i < positions.length; i++) {
      const p = positions[i]!;
      if (!(Number.isInteger(p) && p >= 0 && p < b.length)) throw new AligndError('INTERNAL', `position ${p} is outside the batch length ${b.length}`);
    }
    return i64([b.batch, positions.length / b.batch], positions);
  };

  const model: Model = {
    dir, spec, checkpoint, tokenizer: checkpoint.tokenizer, weights, padId: padIdOf(checkpoint, dir), runtime,
    async logprobs(batch, adapter = null) {
      checkBatch(batch);
      const r = await runKind('logprobs', adapter, batchFeeds(batch));
      return { tokenLogps: r[IO.tokenLogps]!.data as Float32Array, seqLogps: r[IO.seqLogps]!.data as Float32Array };
    },
    async responseLogprobs(batch, adapter = null) {
      const last = maxPosition(batch);
      if (last >= spec.maxPositions) {
        throw new AligndError('CONFIG_INVALID', `a packed sequence reaches position ${last}, past the model's ${spec.maxPositions} positions`, {
          input: dir, action: 'pack batches with maxLength at most max_position_embeddings',
        });
      }
      const r = await runKind('response_logprobs', adapter, packedFeeds(batch));
      return { tokenLogps: r[IO.tokenLogps]!.data as Float32Array, seqLogps: r[IO.seqLogps]!.data as Float32Array };
    },
    async hiddenStates(batch, adapter = null) {
      checkBatch(batch);
      const r = await runKind('hidden', adapter, batchFeeds(tokensOf(batch)));
      return r[IO.lastHidden]!.data as Float32Array;
    },
    async vocabLogProbs(batch, positions, adapter = null) {
      checkBatch(batch);
      const feeds = { ...batchFeeds(tokensOf(batch)), [IO.positions]: positionsTensor(batch, positions) };
      return (await runKind('vocab_logprobs', adapter, feeds))[IO.vocabLogps]!.data as Float32Array;
    },
    async tokenKl(batch, positions, p, q) {
      const lp = await model.vocabLogProbs(batch, positions, p);
      const lq = await model.vocabLogProbs(batch, positions, q);
      const V = spec.vocabSize;
      const n = lp.length / V;
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let v = i * V; v < (i + 1) * V; v++) s += Math.exp(lp[v]!) * (lp[v]! - lq[v]!);
        out[i] = s;
      }
      return out;
    },
    async logits(batch, adapter = null) {
      checkBatch(batch);
      const r = await runKind('logits', adapter, batchFeeds(tokensOf(batch)));
      return r[IO.logits]!.data as Float32Array;
    },
    async generate(prompts, genOpts, adapter = null) {
      const extra = adapter === null ? {} : loraFeeds(adapter);
      const step = async (feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>> =>
        run(await session('decode', adapter?.config ?? null), feeds);
      return generateTokens(step, spec, prompts, genOpts, model.padId, extra);
    },
    async generateText(prompts, genOpts, adapter = null) {
      const tok = checkpoint.tokenizer;
      if (tok === null) {
        throw new AligndError('MODEL_INVALID', 'the checkpoint has no tokenizer.json, so text prompts cannot be encoded', {
          input: dir, action: 'copy the model\'s tokenizer.json and tokenizer_config.json into the checkpoint directory',
        });
      }
      const stopIds = genOpts.stopIds ?? [...new Set([...(tok.eosTokenId === null ? [] : [tok.eosTokenId]), ...spec.eosTokenIds])];
      const out = await model.generate(prompts.map((p) => tok.encodePrompt(p)), { ...genOpts, stopIds }, adapter);
      return out.map((ids) => ({ ids, text: tok.decode(ids, { skipSpecialTokens: true }) }));
    },
    session,
    trainGraph(name, dtype = 'float32', kernels = 'composite') {
      const g = graph(name);
      return { g, base: declareBaseWeights(g, weights, dtype, kernels === 'fused' ? fused : 'composite') };
    },
    compile,
    close() {
      closed = true;
      weights.dispose();
    },
  };
  return model;
}
