/**
 * An alignment model context: the base checkpoint, the LoRA shape, the runtime, and the sessions
 * built for them, made once and reused by every round (a session is keyed by its program's bytes
 * in the engine cache too, but building the graph itself is worth skipping).
 */
import { type AdamWConfig, type ProgramInfo, type RuntimeOptions, type Session, applyProgram, createSession, toOnnx } from '../engine/index.js';
import type { Checkpoint } from '../model/checkpoint.js';
import { initLora, type LoraAdapter, type LoraConfig } from '../model/lora.js';
import { checkSupported } from './forward.js';
import { type DpoProgramOptions, type KtoProgramOptions, type Programs, dpoProgram, klSession, ktoProgram, logitsSession, logpsSession } from './programs.js';

export interface AlignModel extends Programs {
  logps(): Promise<Session>;
  logits(): Promise<Session>;
  /** KL program whose reference adapter has `refCfg`'s shape. */
  kl(refCfg: LoraConfig): Promise<Session>;
  dpo(o: DpoProgramOptions): Promise<{ info: ProgramInfo; session: Session }>;
  kto(o: KtoProgramOptions): Promise<{ info: ProgramInfo; session: Session }>;
  apply(o: AdamWConfig): Promise<{ info: ProgramInfo; session: Session }>;
  /** An adapter of this context's shape with B = 0: exactly the base model. */
  zeroAdapter(cfg?: LoraConfig): LoraAdapter;
}

export function alignModel(ckpt: Checkpoint, lora: LoraConfig, runtime: RuntimeOptions = {}): AlignModel {
  checkSupported(ckpt.spec);
  const p: Programs = { ckpt, lora, runtime };
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
  const compiled = async (info: ProgramInfo): Promise<{ info: ProgramInfo; session: Session }> =>
    ({ info, session: await createSession(toOnnx(info.graph).bytes, runtime) });
  const cfgKey = (c: LoraConfig): string => JSON.stringify([c.r, c.loraAlpha, c.useRslora, [...c.targetModules].sort()]);
  return {
    ...p,
    logps: () => once('logps', () => logpsSession(p)),
    logits: () => once('logits', () => logitsSession(p)),
    kl: (refCfg) => once(`kl:${cfgKey(refCfg)}`, () => klSession(p, refCfg)),
    dpo: (o) => once(`dpo:${JSON.stringify(o, (_, v) => (typeof v === 'function' ? undefined : v))}`, () => compiled(dpoProgram(p, o))),
    kto: (o) => once(`kto:${JSON.stringify(o, (_, v) => (typeof v === 'function' ? undefined : v))}`, () => compiled(ktoProgram(p, o))),
    apply: (o) => once(`apply:${JSON.stringify(o, (_, v) => (typeof v === 'function' ? undefined : v))}`, async () => {
      const shapes = [...initLora(ckpt.spec, lora, 0).pairs].flatMap(([path, pair]) => [
        { name: `lora.${path}.A`, dtype: 'float32' as const, shape: [lora.r, pair.module.inFeatures] },
        { name: `lora.${path}.B`, dtype: 'float32' as const, shape: [pair.module.outFeatures, lora.r] },
      ]);
      return compiled(applyProgram(shapes, o));
    }),
    zeroAdapter: (cfg = lora) => {
      const a = initLora(ckpt.spec, cfg, 0);
      for (const pair of a.pairs.values()) pair.a.fill(0);
      return a;
    },
  };
}
