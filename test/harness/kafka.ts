/**
 * A real single-node Apache Kafka for tests and benchmarks, run from its Maven Central jars with
 * the machine's Java (17+) — no Docker, no mock. See test/harness/README.md for the version choice.
 *
 *   const broker = await startBroker();      // resolves jars once, formats KRaft storage, waits ready
 *   ... broker.brokers ...                    // ['127.0.0.1:<port>'] for kafkajs
 *   await broker.stop(); await broker.start(); // same port, same data: a broker restart
 *   await broker.close();                     // stop and delete the data dir
 *
 * Jars are resolved by Maven into `.cache/kafka/<version>/libs` under the repo root, once; a lock
 * directory makes two test files that start together share one resolution.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync,
  copyFileSync, openSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';

/** 3.9.x: the last line that still serves every protocol version kafkajs 2.2.4 sends (README). */
export const KAFKA_VERSION = process.env['ALIGND_KAFKA_VERSION'] ?? '3.9.1';

const here = dirname(fileURLToPath(import.meta.url));

/** The repo root: the nearest folder above this file whose package.json is alignd's (works from dist/ too). */
export function repoRoot(): string {
  let dir = here;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'alignd') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`kafka harness: no alignd package.json above ${here}`);
    dir = up;
  }
}

/** The pom that names Kafka's artifacts; kept in test/harness/ (not compiled, so found from the repo root). */
function pomPath(): string {
  return join(repoRoot(), 'test', 'harness', 'kafka-pom.xml');
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** mkdir is atomic: the one that creates the lock dir owns it; a dead owner's lock is broken. */
export async function withLock<T>(lockDir: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    try {
      mkdirSync(lockDir);
      writeFileSync(join(lockDir, 'owner'), String(process.pid));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner = NaN;
      try { owner = Number(readFileSync(join(lockDir, 'owner'), 'utf8')); } catch { /* owner file not written yet */ }
      const age = (() => { try { return Date.now() - statSync(lockDir).mtimeMs; } catch { return 0; } })();
      if ((Number.isFinite(owner) && !pidAlive(owner)) || age > 15 * 60_000) rmSync(lockDir, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new Error(`test harness: lock ${lockDir} held by pid ${owner} for too long; remove it if no test is running`);
      else await sleep(500);
    }
  }
  try { return await fn(); } finally { rmSync(lockDir, { recursive: true, force: true }); }
}

function run(cmd: string, args: string[], opts: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv } = {}):
  Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', rej);
    child.on('close', (code) => res({ code, stdout, stderr }));
    child.stdin.end(opts.input ?? '');
  });
}

/**
 * Resolve Kafka's jars from Maven Central (cached). Returns the folder holding them; the classpath
 * is `<folder>/*`.
 */
export async function resolveKafka(version: string = KAFKA_VERSION): Promise<string> {
  const base = join(repoRoot(), '.cache', 'kafka', version);
  const libs = join(base, 'libs');
  if (existsSync(join(libs, '.complete'))) return libs;
  mkdirSync(dirname(base), { recursive: true });
  return withLock(`${base}.lock`, async () => {
    if (existsSync(join(libs, '.complete'))) return libs; // another process resolved it meanwhile
    mkdirSync(base, { recursive: true });
    copyFileSync(pomPath(), join(base, 'pom.xml'));
    const tmp = join(base, `libs.tmp-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    const r = await run('mvn', ['-q', '-B', `-Dkafka.version=${version}`, 'dependency:copy-dependencies',
      '-DincludeScope=runtime', `-DoutputDirectory=${tmp}`], { cwd: base });
    if (r.code !== 0) {
      throw new Error(`kafka harness: Maven could not resolve org.apache.kafka:kafka_2.13:${version} (exit ${r.code}) — ` +
        `check Maven Central is reachable and 'mvn -v' works.\n${(r.stdout + r.stderr).slice(-4000)}`);
    }
    writeLog4j(base);
    writeFileSync(join(tmp, '.complete'), new Date().toISOString());
    rmSync(libs, { recursive: true, force: true });
    renameSync(tmp, libs); // last: libs/ appears only when complete
    return libs;
  });
}

function writeLog4j(base: string): void {
  // Broker: INFO to the file named by -Dkafka.logs.file. Tools: warnings to stderr only.
  writeFileSync(join(base, 'log4j-broker.properties'), [
    'log4j.rootLogger=INFO, file',
    'log4j.appender.file=org.apache.log4j.FileAppender',
    'log4j.appender.file.File=${kafka.logs.file}',
    'log4j.appender.file.layout=org.apache.log4j.PatternLayout',
    'log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n',
    'log4j.logger.kafka.request.logger=WARN',
    'log4j.logger.state.change.logger=WARN',
    '',
  ].join('\n'));
  writeFileSync(join(base, 'log4j-tools.properties'), [
    'log4j.rootLogger=WARN, stderr',
    'log4j.appender.stderr=org.apache.log4j.ConsoleAppender',
    'log4j.appender.stderr.Target=System.err',
    'log4j.appender.stderr.layout=org.apache.log4j.PatternLayout',
    'log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n',
    '',
  ].join('\n'));
}

/** A free TCP port on 127.0.0.1 (asked of the OS, then released). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

export interface BrokerOptions {
  version?: string;
  /** Default partitions of auto-created topics. */
  numPartitions?: number;
  /** Extra server.properties lines (key → value). */
  properties?: Record<string, string | number | boolean>;
  /** JVM heap, e.g. '512m'. */
  heap?: string;
}

export interface Broker {
  /** bootstrap list for kafkajs: ['127.0.0.1:<port>'] */
  readonly brokers: string[];
  readonly port: number;
  readonly dataDir: string;
  readonly logFile: string;
  readonly libs: string;
  /** (Re)start on the same port and data; resolves when the broker answers metadata requests. */
  start(): Promise<void>;
  /** SIGTERM (controlled shutdown), SIGKILL after a grace period. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
  /** Stop and delete the data dir. */
  close(): Promise<void>;
  readonly running: boolean;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // A failing test must not leave a JVM behind.
  process.on('exit', () => { for (const c of live) { try { c.kill('SIGKILL'); } catch { /* already gone */ } } });
}

function clusterId(): string {
  // Kafka's Uuid: 16 bytes, base64url, no padding. One in 64 starts with '-', which StorageTool's
  // argument parser takes for an option ("--cluster-id: expected one argument"): draw again.
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

/**
 * Format KRaft storage and start a single-node broker+controller on free localhost ports. A port
 * taken by someone else between our probe and the broker's bind is retried with fresh ports.
 */
export async function startBroker(opts: BrokerOptions = {}): Promise<Broker> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startBrokerOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !/BindException|Address already in use/.test(String(err))) throw err;
    }
  }
}

async function startBrokerOnce(opts: BrokerOptions): Promise<Broker> {
  const version = opts.version ?? KAFKA_VERSION;
  const libs = await resolveKafka(version);
  const base = dirname(libs);
  const port = await freePort();
  const controllerPort = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'alignd-kafka-'));
  const logDir = join(dataDir, 'logs');
  const logFile = join(dataDir, 'server.log');
  const propsFile = join(dataDir, 'server.properties');
  const props: Record<string, string | number | boolean> = {
    'process.roles': 'broker,controller',
    'node.id': 1,
    'controller.quorum.voters': `1@127.0.0.1:${controllerPort}`,
    'listeners': `PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'log.dirs': logDir,
    'num.partitions': opts.numPartitions ?? 1,
    'default.replication.factor': 1,
    'min.insync.replicas': 1,
    'offsets.topic.replication.factor': 1,
    'offsets.topic.num.partitions': 4, // the default 50 slows the first group join on 2 cores
    'transaction.state.log.replication.factor': 1,
    'transaction.state.log.min.isr': 1,
    'transaction.state.log.num.partitions': 4,
    'group.initial.rebalance.delay.ms': 0,
    'auto.create.topics.enable': true,
    'log.retention.hours': 24,
    'log.segment.bytes': 256 * 1024 * 1024,
    'message.max.bytes': 4 * 1024 * 1024,
    'num.network.threads': 2,
    'num.io.threads': 4,
    ...opts.properties,
  };
  writeFileSync(propsFile, Object.entries(props).map(([k, v]) => `${k}=${String(v)}`).join('\n') + '\n');

  const java = (main: string, args: string[], log4j: string, heap: string): string[] => [
    `-Xmx${heap}`, '-Xms128m', '-Djava.awt.headless=true',
    `-Dlog4j.configuration=file:${join(base, log4j)}`, `-Dkafka.logs.file=${logFile}`,
    '-cp', `${libs}/*`, main, ...args,
  ];
  const fmt = await run('java', java('kafka.tools.StorageTool',
    ['format', '-t', clusterId(), '-c', propsFile, '--ignore-formatted'], 'log4j-tools.properties', '256m'));
  if (fmt.code !== 0) {
    throw new Error(`kafka harness: StorageTool format failed (exit ${fmt.code}) for ${propsFile}:\n${(fmt.stdout + fmt.stderr).slice(-4000)}`);
  }

  installExitHook();
  let proc: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const brokers = [`127.0.0.1:${port}`];

  const logTail = (): string => { try { return readFileSync(logFile, 'utf8').slice(-4000); } catch { return '(no log)'; } };

  const waitReady = async (p: ChildProcess): Promise<void> => {
    const kafka = new Kafka({ clientId: 'harness-ready', brokers, logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 1000 });
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (p.exitCode !== null || p.signalCode !== null) {
        throw new Error(`kafka harness: broker exited (${p.exitCode ?? p.signalCode}) before it was ready; log ${logFile}:\n${logTail()}`);
      }
      const admin = kafka.admin();
      try {
        await admin.connect();
        await admin.listTopics();
        await admin.disconnect();
        return;
      } catch {
        await admin.disconnect().catch(() => {});
      }
      if (Date.now() > deadline) throw new Error(`kafka harness: broker on ${brokers[0]} not ready after 120 s; log ${logFile}:\n${logTail()}`);
      await sleep(300);
    }
  };

  const broker: Broker = {
    brokers, port, dataDir, logFile, libs,
    get running() { return proc !== undefined && proc.exitCode === null && proc.signalCode === null; },
    async start() {
      if (broker.running) return;
      const fd = openSync(join(dataDir, 'stdout.log'), 'a');
      const p = spawn('java', java('kafka.Kafka', [propsFile], 'log4j-broker.properties', opts.heap ?? '512m'),
        { stdio: ['ignore', fd, fd] });
      closeSync(fd);
      proc = p;
      live.add(p);
      exited = new Promise((r) => p.on('exit', () => { live.delete(p); r(); }));
      await waitReady(p);
    },
    async stop(graceMs = 30_000) {
      const p = proc;
      if (!p || !broker.running) return;
      p.kill('SIGTERM');
      const timer = setTimeout(() => { p.kill('SIGKILL'); }, graceMs);
      await exited;
      clearTimeout(timer);
    },
    async kill() {
      const p = proc;
      if (!p || !broker.running) return;
      p.kill('SIGKILL');
      await exited;
    },
    async close() {
      await broker.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  try {
    await broker.start();
  } catch (err) {
    await broker.kill();
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  return broker;
}

/** Create topics (idempotent) and wait until they have leaders. */
export async function createTopics(brokers: string[], topics: { topic: string; numPartitions?: number; config?: Record<string, string> }[]): Promise<void> {
  const admin = new Kafka({ clientId: 'harness-admin', brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    await admin.createTopics({ waitForLeaders: true, topics: topics.map((t) => ({ topic: t.topic, numPartitions: t.numPartitions ?? 1,
      configEntries: Object.entries(t.config ?? {}).map(([name, value]) => ({ name, value })) })) });
  } finally {
    await admin.disconnect();
  }
}

/**
 * Produce lines with Kafka's own console producer (kafka.tools.ConsoleProducer from the same jars),
 * acks=all. With `key`, each line is `key<TAB>value`. Resolves when the tool has exited 0.
 */
export async function consoleProduce(brokers: string[], topic: string, lines: string[],
  opts: { withKeys?: boolean; version?: string } = {}): Promise<void> {
  const libs = await resolveKafka(opts.version ?? KAFKA_VERSION);
  const base = dirname(libs);
  const args = [
    '-Xmx256m', '-XX:TieredStopAtLevel=1', `-Dlog4j.configuration=file:${join(base, 'log4j-tools.properties')}`,
    '-cp', `${libs}/*`, 'kafka.tools.ConsoleProducer',
    '--bootstrap-server', brokers.join(','), '--topic', topic, '--producer-property', 'acks=all',
  ];
  if (opts.withKeys) args.push('--property', 'parse.key=true', '--property', 'key.separator=\t');
  for (const l of lines) {
    if (l.includes('\n')) throw new Error('consoleProduce: a line holds a newline; the console producer sends one message per line');
  }
  const r = await run('java', args, { input: lines.join('\n') + '\n' });
  if (r.code !== 0) throw new Error(`kafka harness: ConsoleProducer to ${topic} failed (exit ${r.code}):\n${(r.stdout + r.stderr).slice(-4000)}`);
}

/** Run as a script (`node dist/test/harness/kafka.js resolve`) to fill the cache ahead of tests. */
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url) && process.argv[2] === 'resolve') {
  resolveKafka().then((libs) => { process.stdout.write(`${libs}\n`); }, (e: unknown) => { process.stderr.write(`${String(e)}\n`); process.exit(1); });
}
