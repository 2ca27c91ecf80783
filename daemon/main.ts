#!/usr/bin/env node
/**
 * alignd's command line and its one composition root: the only place that imports concrete
 * adapters (Kafka, HTTP, file sources) and wires them to the daemon's stages.
 */
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server } from 'node:http';
import { loadDaemonConfig, type DaemonConfig } from './config/process-config.js';
import { AligndError, errorMessage } from './base/errors.js';
import { createLogger, type Logger } from './base/log.js';
import { openBuffer, type ReplayBuffer } from './store/buffer.js';
import { createIngest, type Ingest } from './ingest/pipeline.js';
import { startRetention } from './ingest/retention.js';
import { feedbackJsonSchema } from './feedback/schema.js';
import type { FeedbackSource } from './feedback/sink.js';
import { closeServer, startHttpServer } from './http/server.js';
import { sendJson } from './http/route.js';
import { STATUS_PAGE, STATUS_PAGE_CSP } from './http/status-page.js';
import { createTelemetry, type Telemetry } from './telemetry/telemetry.js';
import { ingestRateSampler } from './telemetry/history.js';
import { parse } from './cli/args.js';
import { readLines, sendHttp } from './cli/send.js';
import { cmdApprove, cmdPolicy, cmdRegistry, cmdRollback } from './cli/policy.js';
import { feedbackRoute } from '../adapters/sources/http.js';
import { fileSource } from '../adapters/sources/file.js';
import { createKafkaSource, type KafkaSource } from '../adapters/sources/kafka.js';
import { sendToKafka } from '../adapters/sources/kafka-send.js';
import { serverTargets, servingEngine } from '../adapters/servers/index.js';
import { kafkaAnnouncer } from '../adapters/publishers/kafka.js';
import { openAiCompatibleJudge } from '../adapters/judges/openai-compatible.js';
import { judgeAdapterConfig } from '../adapters/judges/config.js';
import { remoteTrainer } from '../adapters/trainers/index.js';
import { fileAnnouncer } from './registry/publisher.js';
import { startLoop, type Loop } from './loop/model-loop.js';
import { runtimeOptions } from './engine/engine-config.js';
import { roundWaiter, runDemo } from './demo/demo.js';
import { TINY_SEED, TINY_SERVING_SHAPE, writeTinyModel } from './model/tiny.js';
import { writeDemoPolicy } from './demo/demo-policy.js';
import { DEMO_GUARD_MODEL, startDemoGuard } from './demo/guard.js';

const PACKAGE_ROOT = join(fileURLToPath(import.meta.url), '../../..');
const VERSION = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** The embedded default policy: built-in tiny model, file-drop target under ./.alignd. */
export const DEFAULT_POLICY = join(PACKAGE_ROOT, 'policies', 'default.yaml');

const HELP = `alignd ${VERSION} — continuous alignment beside your inference servers

Usage: alignd <command> [options]

Commands:
  demo [--rounds N]  the embedded default with simulated users: rounds, gate decisions, promotions
  start              run the daemon (embedded defaults: HTTP + file sources, buffer under ./.alignd)
  send [FILE|-]      push feedback events (JSONL) to the daemon's HTTP endpoint or to Kafka
  status             show a running daemon's status (or the buffer's, when it is not running)
  schema             print the JSON Schema of feedback events (alignd.feedback/v1)
  policy check FILE  validate policy files (policies/*.yaml); exit 1 when invalid
  rollback MODEL vN  pin MODEL to registry version vN by editing its policy file
  approve MODEL vN   approve a candidate the gate held (deny MODEL vN refuses it)
  registry list|verify [MODEL]  versions, deployed pointer, integrity and audit chain
  tiny-model DIR     write the built-in tiny model as a Hugging Face checkpoint (--serving: the
                     hidden-128 variant a real vLLM serves on the CPU)
  demo-guard         the demo's guard model: a safety judge behind the OpenAI chat API (no download)
  help               this text

Run 'alignd <command> --help' for a command's options.
`;

const START_USAGE = `Usage: alignd start [--policy FILE ...] [--ingest-only] [--config FILE] [--data-dir DIR] [--host H] [--port N] [--file JSONL ...] [--kafka-brokers B1,B2 --topic T]
  --policy FILE   one per served model (default: the embedded policies/default.yaml, built-in tiny model)
  --ingest-only   take feedback into the buffer, train nothing
Environment: ALIGND_ADMIN_TOKEN (enables admin routes), ALIGND_DATA_DIR, ALIGND_HTTP_HOST, ALIGND_HTTP_PORT, ALIGND_KAFKA_BROKERS, ALIGND_LOG_LEVEL`;
const SEND_USAGE = `Usage: alignd send [FILE|-] [--http URL | --kafka-brokers B1,B2 --topic T]
Default target: --http http://127.0.0.1:8787`;
const STATUS_USAGE = `Usage: alignd status [--url URL] [--data-dir DIR]`;

export interface RunningDaemon {
  config: DaemonConfig;
  buffer: ReplayBuffer;
  ingest: Ingest;
  server: Server | undefined;
  sources: FeedbackSource[];
  telemetry: Telemetry;
  /** The training loop; undefined when started --ingest-only. */
  loop: Loop | undefined;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Policy files, one per served model; empty: ingest only (no training loop). */
  policyFiles: string[];
  /** Loop polling (min-new-examples trigger, reconcile); default from ALIGND_LOOP_POLL_MS or the loop's. */
  pollMs?: number;
  onRound?: Parameters<typeof startLoop>[0]['onRound'];
  /** false: rounds run only on manual triggers (the demo). */
  autoTriggers?: boolean;
}

/** Wire and start the daemon's stages. */
export async function startDaemon(config: DaemonConfig, log: Logger, start: StartOptions = { policyFiles: [] }): Promise<RunningDaemon> {
  const startedAt = new Date();
  const buffer = openBuffer({ path: join(config.dataDir, 'buffer.sqlite'), heldoutFraction: config.ingest.heldoutFraction });
  // With policies, only the models they serve are taken (set once the loop has read them, before
  // any source starts); --ingest-only takes every model.
  let served: ReadonlySet<string> = new Set();
  const ingest = createIngest({ buffer, limits: config.ingest.limits, log: log.child({ stage: 'ingest' }),
    ...(start.policyFiles.length > 0 ? { models: () => served } : {}) });
  ingest.startDeriving();
  const retention = startRetention(buffer, config.ingest.retention, log.child({ stage: 'retention' }));
  const telemetry = createTelemetry({ serviceVersion: VERSION, otlpIntervalMs: config.telemetry.otlpIntervalMs,
    ...(config.telemetry.otlpEndpoint === undefined ? {} : { otlpEndpoint: config.telemetry.otlpEndpoint }) });
  const ingestRate = ingestRateSampler(() => ingest.stats.stored + ingest.stats.duplicates, Number(process.env['ALIGND_INGEST_SAMPLE_MS'] ?? 5000));
  const sources: FeedbackSource[] = [];
  const kafkaSources: KafkaSource[] = [];
  for (const f of config.sources.files) {
    sources.push(fileSource({ path: f.path, pollMs: f.pollMs, log: log.child({ source: 'file' }), checkpoint: (k) => buffer.checkpoint(k) }));
  }
  if (config.sources.kafka !== undefined) {
    const k = createKafkaSource(config.sources.kafka, { log });
    kafkaSources.push(k);
    sources.push(k);
  }
  telemetry.observe({
    bufferEvents: () => buffer.counts().events,
    bufferPending: () => buffer.pending(),
    consumerLag: () => kafkaSources.flatMap((k) => k.lag()),
    ingest: () => ingest.stats,
    deadLettered: () => {
      const total: Record<string, number> = {};
      for (const k of kafkaSources) for (const [code, n] of Object.entries(k.counters.dlq)) total[code] = (total[code] ?? 0) + n;
      return total;
    },
  });
  let loop: Loop | undefined;
  // The Kafka announcer's producer holds sockets open: closed on stop, or the process never exits.
  let closePublisher: (() => Promise<void>) | undefined;
  const pollMs = start.pollMs ?? (process.env['ALIGND_LOOP_POLL_MS'] === undefined ? undefined : Number(process.env['ALIGND_LOOP_POLL_MS']));
  if (start.policyFiles.length > 0) {
    const announcer = config.sources.kafka === undefined ? undefined : kafkaAnnouncer({ brokers: config.sources.kafka.brokers });
    if (announcer !== undefined) closePublisher = () => announcer.close();
    const publisher = announcer ?? fileAnnouncer(join(config.dataDir, 'promotions.jsonl'));
    loop = await startLoop({
      policyFiles: start.policyFiles, dataDir: config.dataDir, buffer, log, telemetry, publisher, runtime: runtimeOptions(config.engine),
      makeTargets: (p) => serverTargets(p.servers),
      externalJudge: (c) => openAiCompatibleJudge(judgeAdapterConfig(c), { log: log.child({ stage: 'judges' }) }),
      remoteTrainer: (t) => remoteTrainer(t),
      servingEngine: (p) => servingEngine(p),
      ...(start.onRound === undefined ? {} : { onRound: start.onRound }),
      ...(start.autoTriggers === undefined ? {} : { autoTriggers: start.autoTriggers }),
      ...(pollMs === undefined ? {} : { pollMs, reconcileMs: pollMs }),
      ...(process.env['ALIGND_LEASE_TTL_MS'] === undefined ? {} : { leaseTtlMs: Number(process.env['ALIGND_LEASE_TTL_MS']) }),
    });
    served = new Set(loop.runtimes.map((rt) => rt.model));
  }
  let ready = false;
  let server: Server | undefined;
  if (config.http.enabled) {
    const adminToken = process.env['ALIGND_ADMIN_TOKEN'];
    server = await startHttpServer({
      host: config.http.host, port: config.http.port, log: log.child({ component: 'http' }),
      ...(adminToken === undefined ? {} : { adminToken }),
      routes: [
        { method: 'GET', path: '/', handler: (_q, res) => {
          res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': STATUS_PAGE_CSP });
          res.end(STATUS_PAGE);
        } },
        { method: 'GET', path: '/metrics', handler: (q, res) => telemetry.prometheusHandler(q, res) },
        { method: 'GET', path: '/v1/history', handler: (_q, res) => sendJson(res, 200, {
          ingest: ingestRate.samples(), rounds: buffer.roundResults(),
        }) },
        { method: 'GET', path: '/healthz', handler: (_q, res) => sendJson(res, 200, { ok: true }) },
        { method: 'GET', path: '/readyz', handler: (_q, res) => sendJson(res, ready ? 200 : 503, { ready }) },
        { method: 'GET', path: '/v1/status', handler: (_q, res) => sendJson(res, 200, {
          version: VERSION, started_at: startedAt.toISOString(), uptime_s: Math.round((Date.now() - startedAt.getTime()) / 1000),
          ingest: ingest.stats, buffer: buffer.counts(), sources: sources.map((s) => s.name), models: loop?.status() ?? [],
        }) },
        ...(loop?.routes() ?? []),
        feedbackRoute({ sink: ingest, maxBodyBytes: config.http.maxBodyBytes, maxEventBytes: config.ingest.limits.maxEventBytes, log }),
      ],
    });
    const addr = server.address();
    log.info('http listening', { address: typeof addr === 'object' && addr !== null ? `${addr.address}:${addr.port}` : addr });
  }
  for (const s of sources) {
    await s.start(ingest);
    log.info('source started', { source: s.name });
  }
  ready = true;
  let stopping: Promise<void> | undefined;
  return {
    config, buffer, ingest, server, sources, telemetry, loop,
    stop() {
      stopping ??= (async () => {
        ready = false;
        // Stop taking events first (each source finishes and acknowledges the batch in hand), then
        // the loop (the round in hand is abandoned between phases and redone after a restart).
        for (const s of sources) {
          try {
            await s.stop();
          } catch (err) {
            log.error('stopping a source failed', { source: s.name, err: errorMessage(err) });
          }
        }
        if (server !== undefined) await closeServer(server);
        if (loop !== undefined) await loop.stop();
        try {
          await closePublisher?.();
        } catch (err) {
          log.error('closing the promotion announcer failed', { err: errorMessage(err) });
        }
        ingestRate.stop();
        await telemetry.shutdown();
        ingest.stopDeriving();
        await retention.stop();
        buffer.close();
      })();
      return stopping;
    },
  };
}

async function cmdStart(argv: string[], log: Logger): Promise<number> {
  const { values } = parse(argv, {
    config: { type: 'string' }, 'data-dir': { type: 'string' }, host: { type: 'string' }, port: { type: 'string' },
    file: { type: 'string', multiple: true }, 'kafka-brokers': { type: 'string' }, topic: { type: 'string', multiple: true },
    policy: { type: 'string', multiple: true }, 'ingest-only': { type: 'boolean' }, help: { type: 'boolean' },
  }, START_USAGE);
  if (values.help === true) {
    process.stdout.write(START_USAGE + '\n');
    return 0;
  }
  const base = loadDaemonConfig(values.config);
  const config: DaemonConfig = {
    ...base,
    dataDir: values['data-dir'] ?? base.dataDir,
    http: { ...base.http, ...(values.host === undefined ? {} : { host: values.host }), ...(values.port === undefined ? {} : { port: Number(values.port) }) },
    sources: {
      files: [...base.sources.files, ...(values.file ?? []).map((path) => ({ path, pollMs: 500 }))],
      ...(values['kafka-brokers'] === undefined ? (base.sources.kafka === undefined ? {} : { kafka: base.sources.kafka })
        : { kafka: { ...base.sources.kafka, brokers: values['kafka-brokers'].split(','), topics: values.topic ?? base.sources.kafka?.topics ?? ['alignd.feedback'] } as NonNullable<DaemonConfig['sources']['kafka']> }),
    },
  };
  const policyFiles = values['ingest-only'] === true ? [] : (values.policy ?? [DEFAULT_POLICY]);
  const daemon = await startDaemon(config, log, { policyFiles });
  log.info('alignd started', { dataDir: config.dataDir, version: VERSION });
  await new Promise<void>((resolve) => {
    const onSignal = (sig: string): void => {
      log.info('signal received: finishing the batch in hand, committing, exiting', { signal: sig });
      daemon.stop().then(resolve, (err: unknown) => {
        log.error('shutdown failed', { err: errorMessage(err) });
        resolve();
      });
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  log.info('alignd stopped');
  return 0;
}

const TINY_USAGE = `Usage: alignd tiny-model DIR [--serving]
Writes the built-in tiny model (Llama layout, byte-level BPE tokenizer with a chat template; seeded,
no download) as a Hugging Face checkpoint directory. --serving: hidden 128 with two heads of 64,
which vLLM's CPU attention serves (the default's heads of 16 are below its smallest head size).`;

function cmdTinyModel(argv: string[]): number {
  const { values, positionals } = parse(argv, { serving: { type: 'boolean' }, help: { type: 'boolean' } }, TINY_USAGE);
  if (values.help === true || positionals.length !== 1) {
    process.stdout.write(TINY_USAGE + '\n');
    return values.help === true ? 0 : 2;
  }
  const dir = positionals[0]!;
  writeTinyModel(dir, TINY_SEED, values.serving === true ? TINY_SERVING_SHAPE : {});
  process.stdout.write(`${dir}: tiny model written${values.serving === true ? ' (serving shape: hidden 128, 2 heads of 64)' : ''}\n`);
  return 0;
}

const DEMO_USAGE = `Usage: alignd demo [--rounds N (10)] [--prompts N] [--data-dir DIR] [--port N] [--policy FILE] [--seed N]
Runs the daemon on its embedded defaults (built-in tiny model, HTTP feedback, registry and buffer under
./.alignd, file-drop target) with simulated users and a simulated guard model as the safety judge (a
second process speaking the OpenAI API); ends with one JSON line of figures.`;

/** The demo holds out a quarter of its feedback (default 10%): the gate's held-out bounds need the pairs at its small per-round α. */
const DEMO_HELDOUT_FRACTION = 0.25;

function demoConfig(values: { 'data-dir'?: string | undefined; port?: string | undefined }): DaemonConfig {
  const base = loadDaemonConfig(undefined);
  return { ...base, dataDir: values['data-dir'] ?? base.dataDir, ingest: { ...base.ingest, heldoutFraction: DEMO_HELDOUT_FRACTION },
    http: { ...base.http, ...(values.port === undefined ? {} : { port: Number(values.port) }) } };
}

const GUARD_USAGE = `Usage: alignd demo-guard [--port N (8001)] [--host H]
The demo's simulated guard model: an OpenAI-compatible chat-completions server answering as Llama
Guard 3 does (safe, or unsafe and a category, with log-probabilities), flagging the demo's hidden
unsafe pattern. A safety judge to try alignd with (model: ${DEMO_GUARD_MODEL}, template: server);
prints one JSON line {"url": ...} once listening.`;

async function cmdDemoGuard(argv: string[], log: Logger): Promise<number> {
  const { values } = parse(argv, { port: { type: 'string' }, host: { type: 'string' }, help: { type: 'boolean' } }, GUARD_USAGE);
  if (values.help === true) {
    process.stdout.write(GUARD_USAGE + '\n');
    return 0;
  }
  const server = await startDemoGuard(Number(values.port ?? 8001), values.host ?? '127.0.0.1');
  process.stdout.write(JSON.stringify({ url: server.url, model: DEMO_GUARD_MODEL }) + '\n');
  log.info('demo guard listening', { url: server.url });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await server.close();
  return 0;
}

/** The demo's guard in its own process (`alignd demo-guard`): its API URL, and how to stop it. */
async function startGuardProcess(log: Logger): Promise<{ url: string; stop: () => void }> {
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), 'demo-guard', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line !== undefined) resolve((JSON.parse(line) as { url: string }).url);
    });
    proc.once('exit', (code, signal) => reject(new AligndError('INTERNAL', `the demo's guard process exited (${code ?? signal}) before listening`)));
  });
  log.info('demo: guard model listening (the safety judge)', { url, pid: proc.pid });
  return { url, stop: () => { proc.kill('SIGTERM'); } };
}

async function cmdDemo(argv: string[], log: Logger): Promise<number> {
  const { values } = parse(argv, {
    rounds: { type: 'string' }, prompts: { type: 'string' }, 'data-dir': { type: 'string' }, port: { type: 'string' },
    policy: { type: 'string' }, seed: { type: 'string' }, help: { type: 'boolean' },
  }, DEMO_USAGE);
  if (values.help === true) {
    process.stdout.write(DEMO_USAGE + '\n');
    return 0;
  }
  const rounds = Number(values.rounds ?? 10);
  if (!(Number.isInteger(rounds) && rounds >= 1)) throw new AligndError('CONFIG_INVALID', `--rounds must be a positive integer, got ${values.rounds}`);
  const waiter = roundWaiter();
  const config = demoConfig(values);
  const seed = Number(values.seed ?? 1);
  const guard = await startGuardProcess(log);
  let daemon: RunningDaemon | undefined;
  try {
    const policyFile = writeDemoPolicy({ policyFile: values.policy ?? DEFAULT_POLICY, guardUrl: guard.url, dir: join(config.dataDir, 'demo'), seed });
    daemon = await startDaemon(config, log, { policyFiles: [policyFile], onRound: waiter.onRound, pollMs: 1000, autoTriggers: false });
    const addr = daemon.server?.address();
    const url = `http://127.0.0.1:${typeof addr === 'object' && addr !== null ? addr.port : 8787}`;
    log.info('demo: status page', { url: `${url}/` });
    const summary = await runDemo(daemon.loop!, url, waiter.next, {
      rounds, promptsPerRound: Number(values.prompts ?? 300), noise: 0.1, reportRate: 0.8, seed, measurePrompts: 256, measureSeeds: 8, log,
    });
    process.stdout.write(JSON.stringify(summary) + '\n');
    return 0;
  } finally {
    await daemon?.stop();
    guard.stop();
  }
}

async function cmdSend(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    http: { type: 'string' }, 'kafka-brokers': { type: 'string' }, topic: { type: 'string' }, help: { type: 'boolean' },
  }, SEND_USAGE);
  if (values.help === true) {
    process.stdout.write(SEND_USAGE + '\n');
    return 0;
  }
  const file = positionals[0];
  if (values['kafka-brokers'] !== undefined) {
    const lines: string[] = [];
    for await (const l of readLines(file)) lines.push(l.text);
    const n = await sendToKafka({ brokers: values['kafka-brokers'].split(','), topic: values.topic ?? 'alignd.feedback' }, lines);
    process.stdout.write(JSON.stringify({ sent: n, target: 'kafka', topic: values.topic ?? 'alignd.feedback' }) + '\n');
    return 0;
  }
  const url = values.http ?? `http://127.0.0.1:${process.env['ALIGND_HTTP_PORT'] ?? 8787}`;
  const r = await sendHttp(url, readLines(file));
  process.stdout.write(JSON.stringify({ ...r, target: url }) + '\n');
  for (const bad of r.rejected) process.stderr.write(`line ${bad.line}: ${bad.code}: ${bad.reason}\n`);
  return r.rejected.length === 0 ? 0 : 2;
}

async function cmdStatus(argv: string[]): Promise<number> {
  const { values } = parse(argv, { url: { type: 'string' }, 'data-dir': { type: 'string' }, help: { type: 'boolean' } }, STATUS_USAGE);
  if (values.help === true) {
    process.stdout.write(STATUS_USAGE + '\n');
    return 0;
  }
  const url = values.url ?? `http://127.0.0.1:${process.env['ALIGND_HTTP_PORT'] ?? 8787}`;
  try {
    const res = await fetch(new URL('/v1/status', url));
    process.stdout.write(JSON.stringify({ daemon: 'running', url, ...(await res.json() as object) }, null, 2) + '\n');
    return 0;
  } catch {
    const config = loadDaemonConfig(undefined);
    const dataDir = values['data-dir'] ?? config.dataDir;
    const buffer = openBuffer({ path: join(dataDir, 'buffer.sqlite'), heldoutFraction: config.ingest.heldoutFraction });
    try {
      process.stdout.write(JSON.stringify({ daemon: 'not running', url, dataDir, buffer: buffer.counts() }, null, 2) + '\n');
    } finally {
      buffer.close();
    }
    return 0;
  }
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const log = createLogger({ service: 'alignd' });
  switch (cmd) {
    case 'start': return cmdStart(rest, log);
    case 'demo': return cmdDemo(rest, log);
    case 'send': return cmdSend(rest);
    case 'status': return cmdStatus(rest);
    case 'policy': return cmdPolicy(rest);
    case 'rollback': return cmdRollback(rest);
    case 'approve': return cmdApprove(rest, true);
    case 'deny': return cmdApprove(rest, false);
    case 'registry': return cmdRegistry(rest);
    case 'tiny-model': return cmdTinyModel(rest);
    case 'demo-guard': return cmdDemoGuard(rest, log);
    case 'schema':
      process.stdout.write(JSON.stringify(feedbackJsonSchema(), null, 2) + '\n');
      return 0;
    case undefined: case 'help': case '--help': case '-h':
      process.stdout.write(HELP);
      return 0;
    case '--version': case 'version':
      process.stdout.write(VERSION + '\n');
      return 0;
    default:
      process.stderr.write(`alignd: unknown command '${cmd}'\n\n${HELP}`);
      return 2;
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === (await import('node:fs')).realpathSync(process.argv[1])) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (err: unknown) => {
    if (err instanceof AligndError) process.stderr.write(`alignd: ${err.message}\n`);
    else process.stderr.write(`alignd: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  });
}
