/**
 * Produce feedback events to Kafka (what `alignd send --kafka` calls): key = event.model, acks=-1.
 * Strings are sent as they are (JSONL lines); objects as JSON. Resolves with the number sent once every message is acknowledged.
 */
import { Kafka } from 'kafkajs';
import { AligndError } from '../../daemon/base/errors.js';
import { createLogger, type Logger } from '../../daemon/base/log.js';
import { kafkaSourceConfigSchema, type KafkaSourceConfigInput } from '../../daemon/ingest/kafka-source-config.js';
import { kafkaClientConfig } from './kafka-client.js';

export interface SendConfig {
  brokers: string[];
  topic: string;
  clientId?: string;
  ssl?: KafkaSourceConfigInput['ssl'];
  sasl?: KafkaSourceConfigInput['sasl'];
}

export async function sendToKafka(target: SendConfig, events: ReadonlyArray<object | string>,
  opts: { log?: Logger; chunk?: number } = {}): Promise<number> {
  const { topic, ...client } = target;
  const config = kafkaSourceConfigSchema.parse({ ...client, clientId: client.clientId ?? 'alignd-send', topics: [topic] });
  const log = (opts.log ?? createLogger()).child({ component: 'kafka-send', topic });
  const kafka = new Kafka(kafkaClientConfig(config, log));
  // A retried send may duplicate a message; the buffer stores each event_id once.
  const producer = kafka.producer({ maxInFlightRequests: 1, allowAutoTopicCreation: true });
  const chunk = opts.chunk ?? 1000;
  await producer.connect();
  try {
    for (let i = 0; i < events.length; i += chunk) {
      const messages = events.slice(i, i + chunk).map((e) => {
        const value = typeof e === 'string' ? e : JSON.stringify(e);
        const model = typeof e === 'string' ? modelOf(e) : (e as { model?: unknown }).model;
        return { key: typeof model === 'string' ? model : null, value };
      });
      await producer.send({ topic, acks: -1, messages });
    }
  } catch (err) {
    throw new AligndError('SOURCE_FAILED', `sending feedback events to Kafka topic ${topic} failed`,
      { input: config.brokers.join(','), action: 'check that the brokers are reachable and the topic exists', cause: err });
  } finally {
    await producer.disconnect().catch(() => {});
  }
  return events.length;
}

function modelOf(line: string): unknown {
  try { return (JSON.parse(line) as { model?: unknown }).model; } catch { return undefined; }
}
