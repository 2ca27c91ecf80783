/** Small helpers over node:util parseArgs so each command states its flags in one place. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { AligndError } from '../base/errors.js';

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, usage: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new AligndError('CONFIG_INVALID', `${(err as Error).message}\n\n${usage}`);
  }
}
