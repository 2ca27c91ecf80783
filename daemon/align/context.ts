/**
 * An alignment model context: the loaded base model (daemon/model `loadModel`), the LoRA shape the
 * policy trains, and the train-step and KL sessions built for them — made once and reused by every
 * round. Inference (log-probs, hidden states, KV-cache generation) is the Model's.
 */
import { type AdamWConfig, type InputDecls, type NoInputs, type Program, type ProgramInfo, type Session, applyProgram, createSession, toOnnx } from '../engine/index.js';
import type { Checkpoint } from '../model/hf-checkpoint.js';
import { loraNames } from '../model/forward-graph.js';
import { initLora, type LoraAdapter, type LoraConfig } from '../model/lora.js';
import { type LoadOptions, type Model, loadModel, loraShapeKey } from '../model/model.js';
import type { PackedInputDecl } from '../model/response-programs.js';
import {
  type DpoProgramInputs, type DpoProgramOptions, type KtoProgramInputs, type KtoProgramOptions, dpoProgram, klInputs, klProgram, ktoProgram,
} from './train-programs.js';

/** A train program (its declared inputs type the feeds of trainStep/accumulate) and its session. */
export interface TrainProgram<I extends InputDecls> { info: ProgramInfo<I>; session: Session }

export interface AlignModel {
  model: Model;
  ckpt: Checkpoint;
  /** The LoRA shape candidates are trained with (the deployed adapter's, or the policy's for a first round). */
  lora: LoraConfig;
  kl(policy: LoraConfig | null, ref: LoraConfig | null): Promise<Program<PackedInputDecl>>;
  dpo(o: DpoProgramOptions): Promise<TrainProgram<DpoProgramInputs>>;
  kto(o: KtoProgramOptions): Promise<TrainProgram<KtoProgramInputs>>;
  apply(o: AdamWConfig): Promise<TrainProgram<NoInputs>>;
  /** PEFT's fresh adapter (A random, B = 0: exactly the base model, with gradient into B). */
  freshAdapter(seed: number): LoraAdapter;
}

/** From a loaded Model, or a checkpoint directory (loaded with `opts`). */
export function alignModel(model: Model | string, lora: LoraConfig, opts: LoadOptions = {}): AlignModel {
  const m = typeof model === 'string' ? loadModel(model, opts) : model;
  const memo = new Map<string, Promise<unknown>>();
  const once = <T>(key: string, make: () => Promise<T>): Promise<T> => {
    let hit = memo.get(key) as Promise<T> | undefined;
    if (hit === undefined) {
      hit = make();
      memo.set(key, hit);
      hit.catch(() => memo.delete(key));
    }
    return hit;
  };
  const compiled = async <I extends InputDecls>(info: ProgramInfo<I>): Promise<TrainProgram<I>> =>
    ({ info, session: await m.compile(info.graph) });
  const key = (o: object): string => JSON.stringify(o, (_, v) => (typeof v === 'function' ? undefined : v));
  return {
    model: m,
    ckpt: m.checkpoint,
    lora,
    kl: (p, r) => once(`kl:${loraShapeKey(p)}:${loraShapeKey(r)}`, async () => ({ inputs: klInputs, session: await m.compile(klProgram(m, p, r)) })),
    dpo: (o) => once(`dpo:${key(o)}`, () => compiled(dpoProgram(m, lora, o))),
    kto: (o) => once(`kto:${key(o)}`, () => compiled(ktoProgram(m, lora, o))),
    apply: (o) => once(`apply:${key(o)}`, async () => {
      const shapes = [...initLora(m.spec, lora, 0).pairs].flatMap(([path, pair]) => [
        { name: loraNames('', path).a, dtype: 'float32' as const, shape: [lora.r, pair.module.inFeatures] },
        { name: loraNames('', path).b, dtype: 'float32' as const, shape: [pair.module.outFeatures, lora.r] },
      ]);
      const info = applyProgram(shapes, o);
      return { info, session: await createSession(toOnnx(info.graph), m.runtime) };
    }),
    freshAdapter: (seed) => initLora(m.spec, lora, seed),
  };
}
