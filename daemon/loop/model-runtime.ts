/**
 * One served model's runtime: its policy (hot-reloaded), registry, server targets, the loaded
 * base model (lazily, with progress logs: loading is the slow part of a first round), and the
 * reward and safety head ensembles persisted between rounds. The composition root makes one per
 * policy file and hands the adapters (server targets, promotion publisher) in.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { AligndError, errorMessage } from '../base/errors.js';
import type { Logger } from '../base/log.js';
import { watchPolicy, type PolicyWatcher } from '../policy/watch.js';
import type { Policy } from '../policy/schema.js';
import { openRegistry, type Registry } from '../registry/registry.js';
import type { PromoteOptions, RetryPolicy } from '../registry/promote.js';
import { abortableSleep, cancelPromotions, defaultRetry } from '../registry/promote.js';
import type { PromotionPublisher, ServerTarget } from '../registry/targets.js';
import { enforceDeployment } from '../release/deploy.js';
import { alignModel, type AlignModel } from '../align/context.js';
import { loraConfigFromPolicy } from '../align/knobs.js';
import { loadHeads, saveHeads, type HeadEnsemble } from '../align/heads.js';
import { loadRewardModel, saveRewardModel, type RewardModel } from '../align/reward-model.js';
import { ensureTinyModel } from '../model/tiny.js';
import { readPeftAdapter } from '../model/peft.js';
import type { LoraAdapter } from '../model/lora.js';
import type { RuntimeOptions } from '../engine/sessions.js';

export const BUILTIN_TINY = 'builtin:tiny';

export interface ModelRuntimeOptions {
  policyFile: string;
  dataDir: string;
  log: Logger;
  /** Server targets for a policy (the composition root wires adapters/servers). */
  makeTargets: (policy: Policy) => ServerTarget[];
  publisher: PromotionPublisher;
  retry?: RetryPolicy;
  /**
   * How long a policy edit (a rollback) waits for its push before answering; the push goes on
   * in the background and the reconcile timer finishes it. Default 2 s.
   */
  answerWithinMs?: number;
  runtime?: Partial<RuntimeOptions>;
  /** Called after a valid policy edit has been applied (and the deployment enforced). */
  onPolicyApplied?: (policy: Policy, changed: string[]) => void;
}

export interface ModelRuntime {
  readonly model: string;
  readonly policyFile: string;
  readonly registry: Registry;
  readonly watcher: PolicyWatcher;
  policy(): Policy;
  targets(): ServerTarget[];
  publisher: PromotionPublisher;
  retry: RetryPolicy;
  /** What a push of this model needs (the current targets, publisher, retry, log). */
  pushOptions(signal?: AbortSignal): Omit<PromoteOptions, 'reason'>;
  /** The base model with the policy's LoRA shape, loaded on first use. */
  align(): Promise<AlignModel>;
  /** Resolved base-model directory (the tiny model is written on first use). */
  baseDir(): string;
  /** A registry version's adapter (null for none = the base model). */
  adapterOf(version: string | null | undefined): Promise<LoraAdapter | null>;
  heads(kind: 'reward' | 'safety'): HeadEnsemble | null;
  saveHeads(kind: 'reward' | 'safety', e: HeadEnsemble): void;
  /** Startup recovery of the registry (staging leftovers, unaudited versions, garbage); call once, before `enforce`. */
  recover(): Promise<void>;
  /** Registry gc by the policy: the newest retention.keep_versions, the pinned version, what gc always keeps. */
  collectGarbage(): Promise<string[]>;
  /** The Bradley–Terry LoRA reward model persisted by the last round (null before the first). */
  rewardModel(): Promise<RewardModel | null>;
  saveRewardModel(rm: RewardModel): void;
  /**
   * Make the servers match the policy's deployment (pinned → serve that version). Resolves when
   * the push is done or after `answerWithinMs`, whichever is first; the push goes on.
   */
  enforce(): Promise<void>;
  /** Stop watching the policy and cancel pushes in hand; resolves when they have ended. */
  stop(): Promise<void>;
}

export function openModelRuntime(opts: ModelRuntimeOptions): ModelRuntime {
  const registryRoot = join(opts.dataDir, 'registry');
  const retry = opts.retry ?? defaultRetry;
  const answerWithinMs = opts.answerWithinMs ?? 2000;
  const pushes = new Set<Promise<void>>();
  const stopping = new AbortController();
  let targets: ServerTarget[] = [];
  let loaded: { key: string; model: Promise<AlignModel> } | undefined;
  // The watcher needs the registry (pinned versions must exist) and the registry needs the model
  // name from the policy: read once through the watcher, then open the registry by that name.
  let registry: Registry | undefined;
  const log = opts.log;
  const watcher = watchPolicy({
    file: opts.policyFile,
    ctx: { versionExists: (m, v) => openRegistry(registryRoot, m).has(v), requireEnv: true },
    audit: (event, fields) => registry?.audit(event, fields),
    log,
    onApply: async (p, _prev, changed) => {
      const ids = (ts: ServerTarget[]): string => ts.map((t) => t.id).join('\n');
      const next = opts.makeTargets(p);
      // A push in hand must not go on to a target the policy no longer names.
      if (ids(next) !== ids(targets)) cancelPromotions(reg, 'the policy\'s server targets changed');
      targets = next;
      await enforce(p);
      opts.onPolicyApplied?.(p, changed);
    },
  });
  const first = watcher.current();
  registry = openRegistry(registryRoot, first.model);
  targets = opts.makeTargets(first);
  const reg = registry;
  const headsDir = join(opts.dataDir, 'heads', first.model);
  const headCache = new Map<string, HeadEnsemble | null>();
  const rewardModelPath = join(headsDir, 'reward-model.safetensors');
  let rewardModelCache: RewardModel | null | undefined;

  function baseDir(): string {
    const p = watcher.current().base_model.path;
    if (p === BUILTIN_TINY) return ensureTinyModel(join(opts.dataDir, 'models', 'tiny'));
    const dir = resolve(p);
    if (!existsSync(join(dir, 'config.json'))) {
      throw new AligndError('MODEL_INVALID', `base model directory ${dir} has no config.json`, {
        action: `set base_model.path in ${opts.policyFile} to a Hugging Face checkpoint directory, or to ${BUILTIN_TINY}` });
    }
    return dir;
  }

  const pushOptions = (signal?: AbortSignal): Omit<PromoteOptions, 'reason'> => ({
    targets, publisher: opts.publisher, retry, log, signal: signal === undefined ? stopping.signal : AbortSignal.any([signal, stopping.signal]),
  });

  function collectGarbage(): Promise<string[]> {
    const p = watcher.current();
    return reg.gc(p.retention.keep_versions, p.deployment.mode === 'pinned' ? [p.deployment.version] : []);
  }

  async function enforce(p: Policy = watcher.current()): Promise<void> {
    const push = enforceDeployment(reg, p.deployment, pushOptions()).then(() => undefined, (err: unknown) => {
      log.error('enforcing the policy deployment failed; it is retried by reconcile', { model: p.model, err: errorMessage(err) });
    });
    pushes.add(push);
    void push.finally(() => pushes.delete(push));
    const waited = new AbortController();
    await Promise.race([push, abortableSleep(answerWithinMs, waited.signal)]);
    waited.abort();
  }

  return {
    model: first.model,
    policyFile: opts.policyFile,
    registry: reg,
    watcher,
    policy: () => watcher.current(),
    targets: () => targets,
    publisher: opts.publisher,
    retry,
    pushOptions,
    baseDir,
    align() {
      const p = watcher.current();
      const lora = loraConfigFromPolicy(p);
      const key = JSON.stringify([p.base_model.path, lora]);
      if (loaded?.key !== key) {
        const dir = baseDir();
        log.info('loading base model', { model: p.model, dir });
        const t0 = Date.now();
        loaded = { key, model: Promise.resolve().then(() => {
          // Weights that cannot be read in place are converted once into the data dir and reused after a restart.
          const m = alignModel(dir, lora, { ...opts.runtime, programDir: join(opts.dataDir, 'weights') });
          log.info('base model loaded', { model: p.model, layers: m.ckpt.spec.numLayers, ms: Date.now() - t0 });
          return m;
        }) };
      }
      return loaded.model;
    },
    async adapterOf(version) {
      if (version === null || version === undefined) return null;
      const v = reg.get(version);
      if (v === undefined) throw new AligndError('STORE_FAILED', `registry of ${reg.model} has no ${version}`, { action: 'check deployed.json and the policy\'s pinned version' });
      const m = await this.align();
      return readPeftAdapter(v.adapterDir, m.ckpt.spec);
    },
    heads(kind) {
      if (!headCache.has(kind)) {
        const path = join(headsDir, `${kind}.json`);
        headCache.set(kind, existsSync(path) ? loadHeads(path) : null);
      }
      return headCache.get(kind) ?? null;
    },
    saveHeads(kind, e) {
      mkdirSync(headsDir, { recursive: true });
      saveHeads(join(headsDir, `${kind}.json`), e, kind);
      headCache.set(kind, e);
    },
    async recover() {
      try {
        const recovered = await reg.cleanStaging();
        if (recovered.removed > 0 || recovered.recovered.length > 0) log.warn('registry recovered after an interrupted write', { model: reg.model, ...recovered });
        // A daemon killed between registering a candidate and its round's gc left one version
        // too many; collecting now keeps retention.keep_versions a bound across crashes.
        const removed = await collectGarbage();
        if (removed.length > 0) log.info('registry gc at start', { model: reg.model, removed });
      } catch (err) {
        // A corrupt audit log (a line that is not a record): the daemon still starts and takes
        // feedback; the error names the file and line. With a corrupt last line the registry
        // refuses new audit records, so nothing is promoted until a person repairs the log.
        log.error('registry recovery failed (see the error for the file and line); repair the audit log', { model: reg.model, err: errorMessage(err),
          ...(err instanceof AligndError && err.input !== undefined ? { file: err.input } : {}) });
      }
    },
    collectGarbage,
    async rewardModel() {
      if (rewardModelCache === undefined) {
        const m = await this.align();
        rewardModelCache = existsSync(rewardModelPath) ? loadRewardModel(rewardModelPath, m.ckpt.spec) : null;
      }
      return rewardModelCache;
    },
    saveRewardModel(rm) {
      mkdirSync(headsDir, { recursive: true });
      saveRewardModel(rewardModelPath, rm);
      rewardModelCache = rm;
    },
    enforce: () => enforce(),
    async stop() {
      watcher.stop();
      stopping.abort(new AligndError('SERVER_FAILED', 'alignd is stopping'));
      cancelPromotions(reg, 'alignd is stopping');
      await Promise.all([...pushes]);
    },
  };
}
