/**
 * The daemon's own configuration (process-level: where data lives, which sources run, how the
 * admin API binds). Per-model behaviour lives in policy files (policies/*.yaml).
 * Sources: a YAML/JSON file given with --config, then ALIGND_* environment variables, then flags.
 * Every field has an embedded default, so `alignd start` runs with no configuration at all.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { AligndError } from '../base/errors.js';
import { defaultLimits } from '../feedback/schema.js';
// The Kafka source's config schema lives in ingest (the adapter imports it from there): no adapter here.
import { kafkaSourceConfigSchema } from '../ingest/kafka-source-config.js';
import { engineConfigSchema } from '../engine/engine-config.js';

export const daemonConfigSchema = z.strictObject({
  dataDir: z.string().default('.alignd'),
  ingest: z.strictObject({
    limits: z.strictObject({
      maxEventBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(defaultLimits.maxEventBytes),
      maxTextChars: z.number().int().min(16).default(defaultLimits.maxTextChars),
      maxMessages: z.number().int().min(1).default(defaultLimits.maxMessages),
      maxFutureSkewS: z.number().int().min(0).default(defaultLimits.maxFutureSkewS),
    }).prefault({}),
    heldoutFraction: z.number().min(0).lt(1).default(0.1),
    /** Applied at start and hourly: older feedback loses its body (the event_id stays), old dead letters go. */
    retention: z.strictObject({
      maxAgeDays: z.number().positive().default(90),
      maxEvents: z.number().int().positive().optional(),
    }).prefault({}),
  }).prefault({}),
  http: z.strictObject({
    enabled: z.boolean().default(true),
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8787),
    /** Largest request body (an NDJSON batch). */
    maxBodyBytes: z.number().int().positive().default(16 * 1024 * 1024),
  }).prefault({}),
  /** Training/inference runtime: execution provider (cpu | cuda | webgpu), threads, ... */
  engine: engineConfigSchema.prefault({}),
  telemetry: z.strictObject({
    /** OTLP/HTTP endpoint (collector base URL) for metrics and traces; unset: OTEL_EXPORTER_OTLP_ENDPOINT or off. */
    otlpEndpoint: z.url().optional(),
    otlpIntervalMs: z.number().int().min(1000).default(15_000),
  }).prefault({}),
  sources: z.strictObject({
    /** JSONL files tailed with a checkpointed offset. */
    files: z.array(z.strictObject({
      path: z.string().min(1),
      pollMs: z.number().int().min(10).default(500),
    })).default([]),
    kafka: kafkaSourceConfigSchema.optional(),
  }).prefault({}),
});
export type DaemonConfig = z.infer<typeof daemonConfigSchema>;

/** Replace `${NAME}` with the environment variable NAME, so secrets stay out of config files. */
function expandEnv(value: unknown, where: string): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Z0-9_]+)\}/g, (_, name: string) => {
      const v = process.env[name];
      if (v === undefined) throw new AligndError('CONFIG_INVALID', `${where} references \${${name}} but that environment variable is not set`, { action: `export ${name}` });
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, `${where}[${i}]`));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandEnv(v, `${where}.${k}`)]));
  }
  return value;
}

export function parseDaemonConfig(raw: unknown, origin: string): DaemonConfig {
  const r = daemonConfigSchema.safeParse(expandEnv(raw ?? {}, origin));
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.join('.') || '(root)'}: ${i.message}`).join('\n');
    throw new AligndError('CONFIG_INVALID', `invalid daemon config ${origin}:\n${lines}`, { action: 'fix the listed fields (see README, "Configuration")' });
  }
  return r.data;
}

/** Config from an optional file, overlaid by ALIGND_DATA_DIR / ALIGND_HTTP_HOST / ALIGND_HTTP_PORT / ALIGND_KAFKA_BROKERS. */
export function loadDaemonConfig(file?: string, env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  let raw: Record<string, unknown> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new AligndError('CONFIG_INVALID', `cannot read config file ${file}: ${(err as Error).message}`, { action: 'check the --config path' });
    }
    try {
      raw = (parseYaml(text) ?? {}) as Record<string, unknown>;
    } catch (err) {
      throw new AligndError('CONFIG_INVALID', `config file ${file} is not valid YAML/JSON: ${(err as Error).message}`);
    }
  }
  const http = { ...(raw['http'] as object | undefined) } as Record<string, unknown>;
  if (env['ALIGND_DATA_DIR']) raw['dataDir'] = env['ALIGND_DATA_DIR'];
  if (env['ALIGND_HTTP_HOST']) http['host'] = env['ALIGND_HTTP_HOST'];
  if (env['ALIGND_HTTP_PORT']) http['port'] = Number(env['ALIGND_HTTP_PORT']);
  raw['http'] = http;
  if (env['ALIGND_KAFKA_BROKERS']) {
    const sources = { ...(raw['sources'] as object | undefined) } as Record<string, unknown>;
    sources['kafka'] = { topics: ['alignd.feedback'], ...(sources['kafka'] as object | undefined), brokers: env['ALIGND_KAFKA_BROKERS'].split(',') };
    raw['sources'] = sources;
  }
  return parseDaemonConfig(raw, file ?? '(defaults)');
}
