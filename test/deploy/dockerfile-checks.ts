/**
 * Static checks of a Dockerfile, for a repository with no Docker engine to build it:
 * dockerfile-utils' validator (the Docker builder's own syntax and argument rules) plus the rules
 * this project holds its image to. Each function returns findings (empty = pass), so the tests can
 * show that every rule fires on a Dockerfile that breaks it.
 */
import { validate } from 'dockerfile-utils';
import type { Copy, Env, Arg, Instruction } from 'dockerfile-ast';
import { containerSpec, execForm, parseDockerfile } from './dockerfile.js';

/** A full version in the tag (node:20.20.2-bookworm-slim), or a digest. Never `latest`, never `20`. */
const PINNED_TAG = /^v?\d+\.\d+\.\d+([-._][A-Za-z0-9._-]+)?$/;
/** Names of variables that carry secrets; a value baked into an image layer is readable by anyone with the image. */
const SECRET_NAME = /(TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|PRIVATE_?KEY|(^|_)KEY$|CREDENTIALS?)/i;
/** Values that are secrets whatever the variable is called. */
const SECRET_VALUE = /(-----BEGIN [A-Z ]*PRIVATE KEY-----|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}|\bsk-[A-Za-z0-9]{20,})/;

const line = (ins: Instruction): number => ins.getRange().start.line + 1;

export function validatorFindings(text: string): string[] {
  return validate(text).map((d) => `line ${d.range.start.line + 1}: ${d.message} (dockerfile-utils ${d.code ?? ''})`);
}

export function pinnedBaseFindings(text: string): string[] {
  const { stages } = parseDockerfile(text);
  const out: string[] = [];
  const names = new Set<string>();
  for (const s of stages) {
    const image = s.from.getImageName() ?? '';
    if (names.has(image)) {
      // FROM <earlier stage>: pinned by that stage.
    } else if (s.from.getImageDigest() !== null) {
      // a digest pins the bytes
    } else {
      const tag = s.from.getImageTag();
      if (tag === null) out.push(`line ${line(s.from)}: FROM ${image} has no tag (means :latest)`);
      else if (!PINNED_TAG.test(tag)) out.push(`line ${line(s.from)}: FROM ${image}:${tag} is not pinned to a full x.y.z version`);
      if (/\$/.test(s.from.getImage() ?? '')) out.push(`line ${line(s.from)}: FROM uses a build variable; the base must be readable here`);
    }
    if (s.name !== null) names.add(s.name);
  }
  if (stages.length === 0) out.push('no FROM');
  return out;
}

export function nonRootFindings(text: string): string[] {
  const { stages } = parseDockerfile(text);
  const last = stages.at(-1);
  if (last === undefined) return ['no FROM'];
  const out: string[] = [];
  let user: { value: string; at: number } | undefined;
  for (const ins of last.instructions) {
    const k = ins.getKeyword();
    if (k === 'USER') user = { value: ins.getArgumentsContent() ?? '', at: line(ins) };
    if ((k === 'CMD' || k === 'ENTRYPOINT') && (user === undefined || isRoot(user.value))) {
      out.push(`line ${line(ins)}: ${k} runs as root (no non-root USER before it in the final stage)`);
    }
  }
  if (user === undefined) out.push('the final stage sets no USER: the container runs as root');
  else if (isRoot(user.value)) out.push(`line ${user.at}: USER ${user.value} is root`);
  return out;
}

function isRoot(user: string): boolean {
  const name = user.split(':')[0]?.trim();
  return name === 'root' || name === '0' || name === '';
}

export function healthcheckFindings(text: string): string[] {
  const spec = containerSpec(text);
  if (spec.healthcheck === null) return ['the final stage has no HEALTHCHECK (or HEALTHCHECK NONE)'];
  const cmd = spec.healthcheck.slice(1).join(' ');
  return /\/healthz/.test(cmd) ? [] : [`HEALTHCHECK does not probe /healthz: ${cmd}`];
}

export function secretFindings(text: string): string[] {
  const { all } = parseDockerfile(text);
  const out: string[] = [];
  for (const ins of all) {
    const k = ins.getKeyword();
    const props = k === 'ENV' ? (ins as Env).getProperties() : k === 'ARG' ? [(ins as Arg).getProperty()].filter((p) => p !== null) : [];
    for (const p of props) {
      const value = p.getUnescapedValue() ?? '';
      if (SECRET_NAME.test(p.getName()) && value !== '') out.push(`line ${line(ins)}: ${k} ${p.getName()} bakes a secret value into the image`);
      else if (SECRET_VALUE.test(value)) out.push(`line ${line(ins)}: ${k} ${p.getName()} holds what looks like a credential`);
    }
    if ((k === 'RUN' || k === 'LABEL') && SECRET_VALUE.test(ins.getRawArgumentsContent() ?? '')) {
      out.push(`line ${line(ins)}: ${k} holds what looks like a credential`);
    }
  }
  return out;
}

/** COPY sources from the build context that .dockerignore would drop (the build would fail on them). */
export function contextFindings(text: string, dockerignore: string): string[] {
  const ignored = dockerignore.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('!'));
  const out: string[] = [];
  for (const ins of parseDockerfile(text).all) {
    if (ins.getKeyword() !== 'COPY' && ins.getKeyword() !== 'ADD') continue;
    if ((ins as Copy).getFromFlag?.() !== null && (ins as Copy).getFromFlag?.() !== undefined) continue;
    const args = ins.getArguments().map((a) => a.getValue());
    for (const src of args.slice(0, -1)) {
      const top = src.replace(/^\.\//, '').split('/')[0] ?? '';
      if (ignored.some((pat) => pat.replace(/\/$/, '') === top || (pat.startsWith('*') && top.endsWith(pat.slice(1))))) {
        out.push(`line ${line(ins)}: COPY ${src} is excluded by .dockerignore (${top})`);
      }
    }
  }
  return out;
}

/**
 * The CUDA build argument reaches the install that ships: a global default before the first FROM,
 * and a re-declaration in every stage that runs `npm ci --omit=dev` (an ARG is scoped to the stage
 * that declares it; without it the install silently keeps "skip").
 */
export function cudaArgFindings(text: string, arg = 'ONNXRUNTIME_NODE_INSTALL'): string[] {
  const { stages, preamble } = parseDockerfile(text);
  const out: string[] = [];
  const argName = (i: Instruction): string | undefined => (i.getKeyword() === 'ARG' ? (i as Arg).getProperty()?.getName() : undefined);
  if (!preamble.some((i) => argName(i) === arg && (i as Arg).getProperty()?.getValue() === 'skip')) {
    out.push(`no global ARG ${arg}=skip before the first FROM`);
  }
  for (const s of stages) {
    let declared = false;
    for (const i of s.instructions) {
      if (argName(i) === arg) declared = true;
      if (i.getKeyword() === 'RUN' && /\bnpm ci\b.*--omit=dev/.test(i.getArgumentsContent() ?? '') && !declared) {
        out.push(`line ${line(i)}: stage ${s.name ?? '(unnamed)'} runs npm ci --omit=dev without ARG ${arg} in scope`);
      }
    }
  }
  return out;
}

/** The `RUN` lines of a stage, as text. */
export function runLines(text: string, stage: string): string[] {
  const s = parseDockerfile(text).stages.find((x) => x.name === stage);
  return (s?.instructions ?? []).filter((i) => i.getKeyword() === 'RUN').map((i) => i.getArgumentsContent() ?? '');
}

export { execForm };
