/**
 * The alignd service of deploy/docker-compose.yml, run as the container would run it: the image's
 * ENTRYPOINT and ENV (Dockerfile) with the service's `command` and `environment` over them, its
 * volumes laid out under a temp root (the image's files by image-fs.ts; `./policies` bind-mounted
 * over /policies), and a real Kafka broker (test/harness) with the topics kafka-init creates, read
 * from kafka-init's own command. Remapped only: `kafka:9092` → the harness broker, the port → a
 * free one, `${ALIGND_ADMIN_TOKEN:?...}` → a test token (compose takes it from the shell).
 * Then: the policy loads in the real daemon, a feedback event produced keyed by model lands in the
 * buffer, admin routes want the token, and SIGTERM stops it cleanly.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { repoRoot } from '../harness/daemon.js';
import { makeEvent } from '../harness/events.js';
import { createTopics, freePort, startBroker } from '../harness/kafka.js';
import { containerSpec, readDockerfile } from './dockerfile.js';
import { layOutImage } from './image-fs.js';
import { readYamlDocs } from './schemas.js';

interface Service { command?: string[]; environment?: Record<string, string>; volumes?: string[] }
const compose = readYamlDocs(join(repoRoot, 'deploy/docker-compose.yml'))[0] as { services: Record<string, Service> };
const svc = compose.services['alignd'] ?? {};
const init = (compose.services['kafka-init']?.command ?? []).join('\n');
const image = containerSpec(readDockerfile());

const tmp = mkdtempSync(join(tmpdir(), 'alignd-compose-run-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

t.test('the compose alignd service ingests from Kafka as deployed', async (t) => {
  const broker = await startBroker();
  t.teardown(() => broker.close());
  const topics = [...init.matchAll(/^\s*t (\S+) (\d+)/gm)].map((m) => ({ topic: m[1] ?? '', numPartitions: Number(m[2]) }));
  t.same(topics.map((x) => x.topic).sort(), ['alignd.feedback', 'alignd.feedback.dlq', 'alignd.promotions']);
  await createTopics(broker.brokers, topics);

  // Volumes: named volumes start as the image has the path; the bind mount hides the image's /policies.
  const fs = layOutImage(readDockerfile(), join(tmp, 'rootfs'));
  for (const v of svc.volumes ?? []) {
    const m = /^(\$\{[^}]*\}[^:]*|[^:]*):([^:]+)(?::(?:ro|rw))?$/.exec(v); // SOURCE:TARGET[:MODE]
    const [src = '', dst = ''] = [m?.[1], m?.[2]];
    if (!dst.startsWith('/')) throw new Error(`unreadable volume ${v}`);
    if (src.startsWith('./')) {
      rmSync(fs.hostPath(dst), { recursive: true, force: true });
      cpSync(join(repoRoot, 'deploy', src), fs.hostPath(dst), { recursive: true });
    } else {
      mkdirSync(fs.hostPath(dst), { recursive: true }); // a named volume or the models bind mount
    }
  }
  const mapPath = (v: string): string => (/^\/(app|data|policies|models)(\/|$)/.test(v) ? fs.hostPath(v) : v);

  const token = 'test-token-' + Math.random().toString(36).slice(2);
  const port = await freePort();
  const composeEnv = Object.fromEntries(Object.entries(svc.environment ?? {}).map(([k, v]) => {
    if (k === 'ALIGND_KAFKA_BROKERS') { t.equal(v, 'kafka:9092'); return [k, broker.brokers.join(',')]; }
    if (/^\$\{ALIGND_ADMIN_TOKEN:\?/.test(v)) return [k, token];
    return [k, v];
  }));
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'], HOME: tmp,
    ...Object.fromEntries(Object.entries({ ...image.env, ...composeEnv }).map(([k, v]) => [k, mapPath(v)])),
    ALIGND_HTTP_PORT: String(port),
  };
  // compose's `command` replaces the image's CMD and keeps its ENTRYPOINT (node /app/dist/daemon/main.js).
  const entrypoint = image.argv.slice(0, 2);
  const argv = [...entrypoint, ...(svc.command ?? [])].map((a, i) => (i === 0 && a === 'node' ? process.execPath : mapPath(a)));
  const proc = spawn(argv[0] ?? '', argv.slice(1), { env, cwd: mapPath(image.workdir), stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: string[] = [];
  proc.stdout.on('data', (c: Buffer) => logs.push(c.toString()));
  proc.stderr.on('data', (c: Buffer) => logs.push(c.toString()));
  let exited = false;
  const exit = once(proc, 'exit').then(([code]) => { exited = true; return code as number | null; });
  t.teardown(() => { if (!exited) proc.kill('SIGKILL'); });
  const url = `http://127.0.0.1:${port}`;

  let ready = 0;
  for (let i = 0; i < 900 && !exited && ready !== 200; i++) {
    ready = (await fetch(`${url}/readyz`).catch(() => undefined))?.status ?? 0;
    if (ready !== 200) await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(ready, 200, 'ready: policy loaded, Kafka source running', { logs: logs.join('') });

  const status0 = await (await fetch(`${url}/v1/status`)).json() as { models: Array<{ model: string; mode: string }>; sources: string[] };
  t.same(status0.models.map((m) => [m.model, m.mode]), [['assistant', 'auto']], 'the mounted policy is the one in force');

  const producer = new Kafka({ clientId: 'compose-test', brokers: broker.brokers, logLevel: logLevel.NOTHING }).producer();
  await producer.connect();
  const event = makeEvent(1, { model: 'assistant', event_id: 'compose-ev-1' });
  await producer.send({ topic: 'alignd.feedback', acks: -1, messages: [{ key: 'assistant', value: JSON.stringify(event) }] });
  await producer.disconnect();

  let stored = 0;
  for (let i = 0; i < 600 && !exited && stored < 1; i++) {
    const s = await (await fetch(`${url}/v1/status`)).json() as { buffer: { byModel: Record<string, number> } };
    stored = s.buffer.byModel['assistant'] ?? 0;
    if (stored < 1) await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(stored, 1, 'the event produced to alignd.feedback is in the buffer', { logs: logs.join('') });

  const noToken = await fetch(`${url}/v1/models/assistant/trigger`, { method: 'POST' });
  t.equal(noToken.status, 401, 'admin routes are on (the token is set) and want it');

  proc.kill('SIGTERM');
  t.equal(await exit, 0, 'SIGTERM: clean exit');
});
