/**
 * A consuming process for the Kafka crash and graceful-stop tests: Kafka source → ingest pipeline →
 * SQLite buffer, exactly as the daemon wires them. Config comes as JSON in ALIGND_CHILD_CONFIG:
 *   { brokers, topic, groupId, dbPath, sessionTimeout? }
 * Prints `ready` on stdout once consuming; on SIGTERM/SIGINT stops gracefully (finish the batch,
 * commit, disconnect), prints its counters as one JSON line and exits 0.
 */
import { createKafkaSource } from '../../adapters/sources/kafka.js';
import { createIngest } from '../../daemon/ingest/pipeline.js';
import { defaultLimits } from '../../daemon/feedback/schema.js';
import { createLogger } from '../../daemon/base/log.js';
import { openBuffer } from '../../daemon/store/buffer.js';

interface ChildConfig { brokers: string[]; topic: string; groupId: string; dbPath: string; sessionTimeout?: number }

const config = JSON.parse(process.env['ALIGND_CHILD_CONFIG'] ?? '{}') as ChildConfig;
const log = createLogger({ child: process.pid }, 'warn');
const buffer = openBuffer({ path: config.dbPath, heldoutFraction: 0.1 });
const ingest = createIngest({ buffer, limits: defaultLimits, log });
const source = createKafkaSource({
  brokers: config.brokers, topics: [config.topic], groupId: config.groupId,
  sessionTimeout: config.sessionTimeout ?? 6000, heartbeatInterval: 1000, rebalanceTimeout: 10_000, maxWaitTimeInMs: 100,
  // small fetches: many batches, so a SIGKILL lands between "stored" and "committed" often
  maxBytesPerPartition: 16 * 1024,
}, { log });

let stopping = false;
const shutdown = (signal: string): void => {
  if (stopping) return;
  stopping = true;
  source.stop().then(() => {
    buffer.close();
    process.stdout.write(JSON.stringify({ stopped: signal, counters: source.counters }) + '\n');
    process.exit(0);
  }, (err: unknown) => {
    log.error('graceful stop failed', { err: String(err) });
    process.exit(1);
  });
};
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

await source.start(ingest);
process.stdout.write('ready\n');
