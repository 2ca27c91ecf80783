/**
 * Probe files: a policy's `probes.red_team` / `probes.benign` may name a JSONL file, one probe per
 * line — `{"prompt": ...}` (a generation probe, optionally with `category`) or
 * `{"prompt": ..., "response": ..., "label": "safe"|"unsafe", "category": ...}` (a labelled judge
 * probe). Read when the policy loads; every bad line is reported with its line number.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { probeLineSchema, splitProbes, type LabelledProbe, type Probe, type ProbeLine } from './schema.js';

/** A path written in a policy file, relative to that file's directory. */
export function resolvePolicyPath(policyFile: string, path: string): string {
  return isAbsolute(path) ? path : resolve(dirname(policyFile), path);
}

export type ProbeFileResult =
  | { ok: true; probes: Probe[]; labelled: LabelledProbe[] }
  | { ok: false; problems: string[] };

export function readProbeFile(path: string): ProbeFileResult {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return { ok: false, problems: [`cannot read probe file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`] };
  }
  const lines: ProbeLine[] = [];
  const problems: string[] = [];
  text.split('\n').forEach((raw, i) => {
    if (raw.trim() === '') return;
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch (err) {
      problems.push(`${path}:${i + 1}: not JSON (${(err as Error).message})`);
      return;
    }
    const r = probeLineSchema.safeParse(json);
    if (!r.success) {
      problems.push(...r.error.issues.map((e) => `${path}:${i + 1}: ${e.path.length === 0 ? '' : `${e.path.join('.')}: `}${e.code === 'unrecognized_keys' ? `unknown field${e.keys.length > 1 ? 's' : ''} ${e.keys.map((k) => `"${k}"`).join(', ')}` : e.message}`));
      return;
    }
    lines.push(r.data);
  });
  if (problems.length > 0) return { ok: false, problems };
  if (lines.length === 0) return { ok: false, problems: [`probe file ${path} holds no probes`] };
  return { ok: true, ...splitProbes(lines) };
}
