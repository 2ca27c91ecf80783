/**
 * Reads the repository's Dockerfile with rcjsuen's dockerfile-ast parser (the parser behind
 * dockerfile-utils, installed with it) and returns what the deployment tests need: its stages, and
 * the runtime stage's command and environment exactly as a container would get them.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DockerfileParser, type Instruction, type JSONInstruction, type From, type Env, type Healthcheck } from 'dockerfile-ast';
import { repoRoot } from '../harness/daemon.js';

export const dockerfilePath = join(repoRoot, 'Dockerfile');

export interface Stage {
  name: string | null;
  from: From;
  instructions: Instruction[];
}

export interface ContainerSpec {
  workdir: string;
  env: Record<string, string>;
  /** ENTRYPOINT then CMD, exec form. */
  argv: string[];
  user: string | null;
  healthcheck: string[] | null;
  exposed: string[];
  volumes: string[];
}

export function parseDockerfile(text: string): { stages: Stage[]; all: Instruction[]; preamble: Instruction[] } {
  const df = DockerfileParser.parse(text);
  const stages: Stage[] = [];
  const preamble: Instruction[] = [];
  const all = df.getInstructions();
  for (const ins of all) {
    if (ins.getKeyword() === 'FROM') {
      const from = ins as From;
      stages.push({ name: from.getBuildStage(), from, instructions: [] });
    } else {
      (stages.at(-1)?.instructions ?? preamble).push(ins);
    }
  }
  return { stages, all, preamble };
}

/** An exec-form (JSON) instruction's strings; shell form is refused: its meaning depends on /bin/sh. */
export function execForm(ins: Instruction): string[] {
  const strings = (ins as JSONInstruction).getJSONStrings?.() ?? [];
  if (strings.length === 0) throw new Error(`${ins.getKeyword()} on line ${ins.getRange().start.line + 1} is not in exec (JSON) form`);
  return strings.map((s) => s.getJSONValue());
}

/** What `docker run IMAGE` (no overrides) gets from the last stage. */
export function containerSpec(text: string): ContainerSpec {
  const { stages } = parseDockerfile(text);
  const last = stages.at(-1);
  if (last === undefined) throw new Error('Dockerfile has no FROM');
  const spec: ContainerSpec = { workdir: '/', env: {}, argv: [], user: null, healthcheck: null, exposed: [], volumes: [] };
  let entrypoint: string[] = [];
  let cmd: string[] = [];
  for (const ins of last.instructions) {
    switch (ins.getKeyword()) {
      case 'WORKDIR': spec.workdir = ins.getArgumentsContent() ?? '/'; break;
      case 'ENV':
        for (const p of (ins as Env).getProperties()) spec.env[p.getName()] = p.getUnescapedValue() ?? '';
        break;
      case 'ENTRYPOINT': entrypoint = execForm(ins); cmd = []; break; // a new ENTRYPOINT resets CMD
      case 'CMD': cmd = execForm(ins); break;
      case 'USER': spec.user = ins.getArgumentsContent(); break;
      case 'EXPOSE': spec.exposed.push(...ins.getArguments().map((a) => a.getValue())); break;
      case 'VOLUME': spec.volumes.push(...volumeArgs(ins)); break;
      case 'HEALTHCHECK': {
        const sub = (ins as Healthcheck).getSubcommand()?.getValue().toUpperCase();
        spec.healthcheck = sub === 'NONE' ? null : healthcheckCommand(ins);
        break;
      }
      default: break;
    }
  }
  spec.argv = [...entrypoint, ...cmd];
  return spec;
}

/** HEALTHCHECK [--flag=v ...] CMD ["exec", "form"]: dockerfile-ast exposes the flags but not the
 * JSON array after CMD, so that part is read as the JSON it must be. */
function healthcheckCommand(ins: Instruction): string[] {
  const content = (ins.getRawArgumentsContent() ?? '').replace(/\\\r?\n/g, ' ');
  const m = /^(?:\s*--[a-z-]+=\S+)*\s*CMD\s+(\[[\s\S]*\])\s*$/i.exec(content);
  if (m === null) throw new Error(`HEALTHCHECK on line ${ins.getRange().start.line + 1} is not "CMD [exec form]"`);
  const argv = JSON.parse(m[1] ?? '') as unknown;
  if (!Array.isArray(argv) || !argv.every((a) => typeof a === 'string')) throw new Error('HEALTHCHECK CMD is not a JSON array of strings');
  return argv as string[];
}

function volumeArgs(ins: Instruction): string[] {
  try {
    return execForm(ins);
  } catch {
    return ins.getArguments().map((a) => a.getValue());
  }
}

export function readDockerfile(): string {
  return readFileSync(dockerfilePath, 'utf8');
}
