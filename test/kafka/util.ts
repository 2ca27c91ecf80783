/** Small helpers shared by the Kafka tests (not a test file itself). */
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll until `cond` holds; fail with `describe()` after `ms`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, describe: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${describe()}`);
    await sleep(100);
  }
}

export interface ReadMessage {
  partition: number;
  offset: string;
  key: string | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

/** Read `count` messages from a topic from the beginning with a throwaway group. */
export async function readTopic(brokers: string[], topic: string, count: number, ms: number): Promise<ReadMessage[]> {
  const kafka = new Kafka({ brokers, logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `reader-${topic}-${process.pid}-${Date.now()}`, maxWaitTimeInMs: 100 });
  const out: ReadMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) {
          const first = Array.isArray(v) ? v[0] : v;
          if (first !== undefined) headers[k] = first.toString();
        }
        out.push({ partition, offset: message.offset, key: message.key?.toString() ?? null, value: message.value, headers });
      },
    });
    await waitFor(() => out.length >= count, ms, () => `read ${out.length} of ${count} from ${topic}`);
    await sleep(300); // anything beyond `count` would show up too
  } finally {
    await consumer.disconnect();
  }
  return out;
}

/**
 * Committed offsets of a group and the end offsets of a topic, by partition. A partition that never
 * held a message has nothing to commit: its committed -1 is reported as its end offset 0.
 */
export async function committedEqualsEnd(brokers: string[], groupId: string, topic: string):
  Promise<{ committed: Record<number, string>; end: Record<number, string> }> {
  const admin = new Kafka({ brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const [fetched] = await admin.fetchOffsets({ groupId, topics: [topic] });
    const ends = await admin.fetchTopicOffsets(topic);
    const committed: Record<number, string> = {};
    for (const p of fetched?.partitions ?? []) committed[p.partition] = p.offset;
    for (const p of ends) if (p.high === '0' && committed[p.partition] === '-1') committed[p.partition] = '0';
    const end: Record<number, string> = {};
    for (const p of ends) end[p.partition] = p.high;
    return { committed, end };
  } finally {
    await admin.disconnect();
  }
}

export interface Child {
  proc: import('node:child_process').ChildProcess;
  /** Resolves when the child printed `ready` (its consumer is running). */
  ready: Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

/**
 * Start test/harness/consume-child in its own node process. Under tap (TypeScript sources) the child
 * runs the .ts file through tap's TypeScript loader; from dist/ it runs the compiled .js.
 */
export function spawnConsumer(config: { brokers: string[]; topic: string; groupId: string; dbPath: string; sessionTimeout?: number }): Child {
  const here = fileURLToPath(import.meta.url);
  const ts = here.endsWith('.ts');
  const entry = join(dirname(here), '..', 'harness', ts ? 'consume-child.ts' : 'consume-child.js');
  const loader = ts ? process.execArgv.filter((a) => a.includes('@tapjs/typescript')) : [];
  const proc = spawn(process.execPath, [...loader, entry], {
    env: { ...process.env, ALIGND_CHILD_CONFIG: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let onReady: () => void = () => {};
  const ready = new Promise<void>((res) => { onReady = res; });
  proc.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); if (stdout.includes('ready\n')) onReady(); });
  proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((res) => {
    proc.on('exit', (code, signal) => res({ code, signal, stdout, stderr }));
  });
  return {
    proc,
    ready: Promise.race([ready, exited.then((e) => { throw new Error(`consumer child exited (${e.code ?? e.signal}) before ready:\n${e.stderr.slice(-3000)}`); })]),
    exited,
  };
}
