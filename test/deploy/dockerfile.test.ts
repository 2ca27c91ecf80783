/**
 * The Dockerfile, checked without a Docker engine: dockerfile-utils' validator, then this
 * project's rules (pinned base, non-root user, healthcheck, no secrets, the same npm scripts as
 * CI, production dependencies only at runtime). Each rule is also shown to fire on a Dockerfile
 * that breaks it, so a silently passing check cannot hide here.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from '../harness/daemon.js';
import type { Copy } from 'dockerfile-ast';
import { containerSpec, parseDockerfile, readDockerfile } from './dockerfile.js';
import {
  contextFindings, cudaArgFindings, healthcheckFindings, nonRootFindings, pinnedBaseFindings, runLines, secretFindings, validatorFindings,
} from './dockerfile-checks.js';

const text = readDockerfile();
const dockerignore = readFileSync(join(repoRoot, '.dockerignore'), 'utf8');
const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };

/** The real Dockerfile with one textual change; fails loudly if the anchor is gone. */
function mutate(from: string | RegExp, to: string): string {
  const out = text.replace(from, to);
  if (out === text) throw new Error(`mutation anchor not found: ${String(from)}`);
  return out;
}

t.test('dockerfile-utils finds no problem', async (t) => {
  t.same(validatorFindings(text), []);
  t.ok(validatorFindings(mutate(/^EXPOSE 8787$/m, 'EXPOSE 87x87')).length > 0, 'it reports a bad EXPOSE');
  t.ok(validatorFindings(mutate(/^HEALTHCHECK --interval=30s/m, 'HEALTHCHECK --interval=30parsecs')).length > 0, 'it reports a bad duration');
});

t.test('every base image is pinned to a full version', async (t) => {
  t.same(pinnedBaseFindings(text), []);
  const { stages } = parseDockerfile(text);
  t.ok(stages.length >= 2, 'multi-stage');
  for (const s of stages.filter((x) => x.from.getImageName() === 'node')) {
    t.match(s.from.getImageTag(), /^20\.\d+\.\d+-bookworm-slim$/, `stage ${s.name}: Node 20 slim`);
  }
  t.match(pinnedBaseFindings(mutate('FROM node:20.20.2-bookworm-slim AS runtime', 'FROM node:20-bookworm-slim AS runtime')), [/not pinned/]);
  t.match(pinnedBaseFindings(mutate('FROM node:20.20.2-bookworm-slim AS runtime', 'FROM node AS runtime')), [/no tag/]);
  t.same(pinnedBaseFindings(mutate('FROM node:20.20.2-bookworm-slim AS runtime', `FROM node@sha256:${'a'.repeat(64)} AS runtime`)), [], 'a digest pins too');
});

t.test('the container runs as a non-root user', async (t) => {
  t.same(nonRootFindings(text), []);
  t.notSame(containerSpec(text).user, null);
  t.match(nonRootFindings(mutate(/^USER 1000:1000$/m, 'USER root')), [/root/]);
  t.match(nonRootFindings(mutate(/^USER 1000:1000$/m, '')), [/runs as root/]);
  const late = mutate(/^USER 1000:1000\n/m, '') + 'USER 1000\n';
  t.match(nonRootFindings(late), [/ENTRYPOINT runs as root/], 'USER after the command does not count');
});

t.test('HEALTHCHECK probes /healthz without curl', async (t) => {
  t.same(healthcheckFindings(text), []);
  const hc = containerSpec(text).healthcheck ?? [];
  t.equal(hc[0], 'node', 'node -e fetch (the slim image has no curl)');
  t.match(healthcheckFindings(mutate(/^HEALTHCHECK [\s\S]*?\/healthz[^\n]*\n/m, 'HEALTHCHECK NONE\n')), [/no HEALTHCHECK/]);
});

t.test('no secret in ENV, ARG or RUN', async (t) => {
  t.same(secretFindings(text), []);
  const spec = containerSpec(text);
  t.notOk('ALIGND_ADMIN_TOKEN' in spec.env, 'the admin token is never an image default');
  t.match(secretFindings(mutate('ENV NODE_ENV=production', 'ENV ALIGND_ADMIN_TOKEN=s3cr3t NODE_ENV=production')), [/ALIGND_ADMIN_TOKEN bakes a secret/]);
  t.match(secretFindings(mutate(/^ARG ONNXRUNTIME_NODE_INSTALL=skip$/m, 'ARG NPM_TOKEN=abc\nARG ONNXRUNTIME_NODE_INSTALL=skip')), [/NPM_TOKEN/]);
  t.match(secretFindings(mutate(/^ARG ONNXRUNTIME_NODE_INSTALL=skip$/m, `ARG MIRROR=AKIA${'A'.repeat(16)}\nARG ONNXRUNTIME_NODE_INSTALL=skip`)), [/credential/]);
  t.same(secretFindings(mutate(/^ARG ONNXRUNTIME_NODE_INSTALL=skip$/m, 'ARG NPM_TOKEN\nARG ONNXRUNTIME_NODE_INSTALL=skip')), [], 'a declared ARG with no value is fine (passed at build time)');
});

t.test('the image builds with the npm scripts CI runs, and ships production dependencies only', async (t) => {
  const build = runLines(text, 'build');
  t.ok(build.some((l) => /\bnpm ci\b(?!.*--omit)/.test(l)), 'build: npm ci (every dependency, as .ci/run)');
  t.ok(build.some((l) => /\bnpm run build\b/.test(l)), 'build: npm run build');
  t.ok(pkg.scripts['build'], 'package.json has the build script the image runs');
  t.ok(runLines(text, 'prod-deps').some((l) => /\bnpm ci\b.*--omit=dev/.test(l)), 'prod-deps: npm ci --omit=dev');
  const runtime = parseDockerfile(text).stages.at(-1);
  const copies = (runtime?.instructions ?? []).filter((i) => i.getKeyword() === 'COPY')
    .map((i) => `${(i as Copy).getFromFlag()?.getValue() ?? '(context)'} ${i.getArguments().map((a) => a.getValue()).join(' ')}`);
  t.ok(copies.includes('prod-deps /app/node_modules ./node_modules'), 'runtime node_modules come from the --omit=dev install');
  t.notOk(copies.some((c) => /^build .*node_modules/.test(c)), 'never the dev install');
  t.notOk(runLines(text, 'runtime').some((l) => /\bnpm\b/.test(l)), 'no npm install in the runtime stage (no registry access, no dev packages)');
});

t.test('GPU build argument, volumes, port and environment', async (t) => {
  t.same(cudaArgFindings(text), [], 'ARG ONNXRUNTIME_NODE_INSTALL (cuda12 for GPU images) reaches the shipped install');
  t.match(cudaArgFindings(mutate(/^ARG ONNXRUNTIME_NODE_INSTALL$/m, '')), [/prod-deps runs npm ci --omit=dev without ARG/], 'a stage-scoped ARG is needed');
  t.match(cudaArgFindings(mutate(/^ARG ONNXRUNTIME_NODE_INSTALL=skip$/m, '')), [/no global ARG/]);
  const spec = containerSpec(text);
  t.same([...spec.volumes].sort(), ['/data', '/policies']);
  t.same(spec.exposed, [spec.env['ALIGND_HTTP_PORT']], 'EXPOSE matches ALIGND_HTTP_PORT');
  t.equal(spec.env['ALIGND_DATA_DIR'], '/data');
  t.equal(spec.env['ALIGND_HTTP_HOST'], '0.0.0.0', 'inside the container the network namespace is the boundary');
  t.equal(spec.argv[0], 'node');
});

t.test('.dockerignore keeps the context small and lets every COPY through', async (t) => {
  t.same(contextFindings(text, dockerignore), []);
  const lines = dockerignore.split('\n').map((l) => l.trim());
  for (const p of ['node_modules', '.git', '.env', '.alignd', 'dist', '.cache']) t.ok(lines.includes(p), `ignores ${p}`);
  t.match(contextFindings(text, dockerignore + '\npolicies\n'), [/COPY policies .* excluded/]);
});
