/**
 * Writing a round's candidate: the PEFT adapter directory (what vLLM/TGI/PEFT load as is) and
 * `round.json`, the resumable metadata: which examples were trained on, the data window marks the
 * caller passed (example/event ids, Kafka offsets), the knobs, steps, stop reason and KL figures.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicDurable } from '../base/fs-durable.js';
import { writePeftAdapter } from '../model/peft.js';
import type { AlignModel } from './context.js';
import type { TrainingKnobs } from './knobs.js';
import type { TrainingResult } from './train-round.js';

export const ROUND_META = 'round.json';

export function writeCandidate(dir: string, m: AlignModel, r: TrainingResult, knobs: TrainingKnobs, meta: Record<string, unknown>): string {
  mkdirSync(dir, { recursive: true });
  const adapterDir = join(dir, 'adapter');
  writePeftAdapter(adapterDir, m.ckpt.spec, r.candidate!);
  const body = {
    format: 'alignd.round/v1',
    base_model: m.ckpt.dir,
    ...meta,
    knobs,
    trained_example_ids: r.trainedExampleIds,
    skipped: r.skipped,
    steps_taken: r.stepsTaken,
    kept_step: r.keptStep,
    stop_reason: r.stopReason,
    reason: r.reason,
    beta: r.beta,
    kl: r.kl,
    kl_checks: r.klChecks,
    kl_context_source: r.klContextSource,
    heldout: r.heldout,
    last_step: r.steps[r.steps.length - 1] ?? null,
  };
  writeFileAtomicDurable(join(dir, ROUND_META), JSON.stringify(body, null, 2) + '\n');
  return adapterDir;
}
