/** The kafkajs client every Kafka adapter of the feedback source builds: config mapping and log routing. */
import { logLevel as kafkaLogLevel, type KafkaConfig, type LogEntry, type SASLOptions } from 'kafkajs';
import type { Logger } from '../../daemon/base/log.js';
import type { KafkaSourceConfig } from '../../daemon/ingest/kafka-source-config.js';

/** kafkajs' own log lines, routed into ours (warn and above; kafkajs is chatty at info). */
function kafkajsLogCreator(log: Logger) {
  return () => ({ level, log: entry }: LogEntry) => {
    const { message, ...fields } = entry;
    const f = { ...fields, kafkajs: true };
    if (level === kafkaLogLevel.ERROR) log.warn(`kafkajs: ${message}`, f); // kafkajs logs retried errors as ERROR
    else if (level === kafkaLogLevel.WARN) log.warn(`kafkajs: ${message}`, f);
    else log.debug(`kafkajs: ${message}`, f);
  };
}

export function kafkaClientConfig(config: KafkaSourceConfig, log: Logger): KafkaConfig {
  const c: KafkaConfig = {
    clientId: config.clientId,
    brokers: config.brokers,
    connectionTimeout: config.connectionTimeout,
    requestTimeout: config.requestTimeout,
    retry: { initialRetryTime: config.retry.initialRetryTime, maxRetryTime: config.retry.maxRetryTime, retries: config.retry.retries },
    logLevel: kafkaLogLevel.WARN,
    logCreator: kafkajsLogCreator(log),
  };
  if (config.ssl !== undefined) c.ssl = config.ssl as KafkaConfig['ssl'];
  if (config.sasl !== undefined) c.sasl = config.sasl as unknown as SASLOptions;
  return c;
}
