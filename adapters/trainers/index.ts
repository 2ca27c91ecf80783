/**
 * The remote training engine of a policy's `trainer` section (used by the composition root).
 * Secrets come from the environment variables the policy names.
 */
import { AligndError } from '../../daemon/base/errors.js';
import type { TrainerConfig } from '../../daemon/policy/schema.js';
import type { RemoteTrainer } from '../../daemon/remote/remote-trainer.js';
import { rayTrainer } from './ray.js';

export function remoteTrainer(c: Exclude<TrainerConfig, { kind: 'local' }>, env: NodeJS.ProcessEnv = process.env): RemoteTrainer {
  switch (c.kind) {
    case 'ray': {
      const token = c.token_env === undefined ? undefined : env[c.token_env];
      if (c.token_env !== undefined && (token === undefined || token === '')) {
        throw new AligndError('CONFIG_INVALID', `the ray trainer needs ${c.token_env}, which is not set`, { action: `export ${c.token_env}` });
      }
      return rayTrainer({ address: c.address, ...(token === undefined ? {} : { token }) });
    }
  }
}
