/**
 * Training knobs for tests, made the way the daemon makes them: a minimal policy with the test's
 * objective/kl overrides, parsed by the policy schema (the one table of defaults and constraints),
 * then trainingKnobs(). Later layers override earlier ones field by field.
 */
import { trainingKnobs, type TrainingKnobs } from '../../daemon/align/knobs.js';
import { type PolicyInput, policySchema } from '../../daemon/policy/schema.js';

type Objective = NonNullable<PolicyInput['objective']>;
type Kl = NonNullable<PolicyInput['kl']>;
export interface KnobLayer { objective?: Objective; kl?: Kl }

export function policyKnobs(...layers: KnobLayer[]): TrainingKnobs {
  const objective: Objective = {};
  const kl: Kl = {};
  for (const l of layers) {
    Object.assign(objective, l.objective);
    const { sampled, adaptive_beta: ab, ...rest } = l.kl ?? {};
    Object.assign(kl, rest);
    if (sampled !== undefined) kl.sampled = { ...kl.sampled, ...sampled };
    if (ab !== undefined) kl.adaptive_beta = { ...kl.adaptive_beta, ...ab };
  }
  return trainingKnobs(policySchema.parse({ model: 'tiny', base_model: { path: 'builtin:tiny' }, objective, kl }));
}
