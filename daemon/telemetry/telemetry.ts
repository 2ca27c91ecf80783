/**
 * OpenTelemetry metrics and traces for the daemon. Metrics are served for Prometheus on the
 * daemon's own HTTP server (`GET /metrics`) and, when an OTLP endpoint is configured
 * (telemetry.otlpEndpoint or OTEL_EXPORTER_OTLP_ENDPOINT), pushed over OTLP/HTTP too; traces
 * (rounds, gate decisions, promotions) go to OTLP when configured, else nowhere.
 * All instruments are created here, in one place, with the field's names.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Attributes, type Meter, type Tracer, type Span, SpanStatusCode } from '@opentelemetry/api';
import { MeterProvider, PeriodicExportingMetricReader, type IMetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';

export interface TelemetryOptions {
  serviceVersion: string;
  /** OTLP/HTTP base endpoint, e.g. http://otel-collector:4318; undefined → env or off. */
  otlpEndpoint?: string;
  otlpIntervalMs?: number;
}

/** Values read at collection time (gauges); the composition root supplies them. */
export interface Observed {
  bufferEvents(): number;
  bufferPending(): number;
  /** Per topic-partition consumer lag, when a Kafka source runs. */
  consumerLag(): Array<{ topic: string; partition: number; lag: number }>;
  /** Monotonic ingest totals (the pipeline's own counters). */
  ingest(): { stored: number; duplicates: number; rejected: Record<string, number> };
  /** Messages sent to a dead-letter topic, by reason code (monotonic). */
  deadLettered(): Record<string, number>;
}

export function createTelemetry(opts: TelemetryOptions) {
  const resource = resourceFromAttributes({ 'service.name': 'alignd', 'service.version': opts.serviceVersion });
  const prometheus = new PrometheusExporter({ preventServerStart: true });
  const endpoint = opts.otlpEndpoint ?? process.env['OTEL_EXPORTER_OTLP_ENDPOINT'];
  const readers: IMetricReader[] = [prometheus];
  const spanProcessors: SpanProcessor[] = [];
  if (endpoint !== undefined && endpoint !== '') {
    const base = endpoint.replace(/\/$/, '');
    readers.push(new PeriodicExportingMetricReader({
      exporter: new OTLPMetricExporter({ url: `${base}/v1/metrics` }), exportIntervalMillis: opts.otlpIntervalMs ?? 15_000 }));
    spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: `${base}/v1/traces` })));
  }
  const meterProvider = new MeterProvider({ resource, readers });
  const tracerProvider = new BasicTracerProvider({ resource, spanProcessors });
  const meter: Meter = meterProvider.getMeter('alignd', opts.serviceVersion);
  const tracer: Tracer = tracerProvider.getTracer('alignd', opts.serviceVersion);

  const instruments = {
    rounds: meter.createCounter('alignd_rounds', { description: 'Training rounds finished, by model and outcome' }),
    roundLoss: meter.createHistogram('alignd_round_loss', { description: 'Final training loss of a round' }),
    roundKl: meter.createHistogram('alignd_round_kl', { description: 'KL(candidate‖deployed) per token at the end of a round (nats)' }),
    decisions: meter.createCounter('alignd_gate_decisions', { description: 'Gate decisions by model and decision (promote, reject, hold)' }),
    rewardLcb: meter.createHistogram('alignd_gate_reward_lcb', { description: 'Lower confidence bound of the reward gain at the gate' }),
    rewardSignalAccuracy: meter.createHistogram('alignd_reward_signal_heldout_accuracy', { description: 'Held-out pair ranking accuracy of the reward signal the gate read, per round' }),
    unsafeUcb: meter.createHistogram('alignd_gate_unsafe_ucb', { description: 'Upper confidence bound of the unsafe rate at the gate' }),
    promotionLatency: meter.createHistogram('alignd_promotion_latency_seconds', { description: 'From the round\'s newest event to the adapter loaded at every server target', unit: 's' }),
    errors: meter.createCounter('alignd_errors', { description: 'Failures by component (each also logged)' }),
  };

  let observed: Observed | undefined;
  meter.createObservableGauge('alignd_buffer_events', { description: 'Events held in the replay buffer' })
    .addCallback((r) => { if (observed) r.observe(observed.bufferEvents()); });
  meter.createObservableGauge('alignd_buffer_pending', { description: 'Stored events whose examples are not derived yet (backpressure signal)' })
    .addCallback((r) => { if (observed) r.observe(observed.bufferPending()); });
  meter.createObservableCounter('alignd_ingest_events', { description: 'Feedback messages taken in, by outcome (stored, duplicate, rejected with its code)' })
    .addCallback((r) => {
      if (!observed) return;
      const s = observed.ingest();
      r.observe(s.stored, { outcome: 'stored' });
      r.observe(s.duplicates, { outcome: 'duplicate' });
      for (const [code, n] of Object.entries(s.rejected)) r.observe(n, { outcome: 'rejected', code });
    });
  meter.createObservableCounter('alignd_dlq_events', { description: 'Messages sent to a dead-letter topic, by reason code' })
    .addCallback((r) => { for (const [code, n] of Object.entries(observed?.deadLettered() ?? {})) r.observe(n, { code }); });
  meter.createObservableGauge('alignd_kafka_consumer_lag', { description: 'Messages behind the partition end, per topic-partition' })
    .addCallback((r) => { for (const l of observed?.consumerLag() ?? []) r.observe(l.lag, { topic: l.topic, partition: l.partition }); });

  return {
    meter, tracer, instruments,
    observe(o: Observed): void { observed = o; },
    /** Serve the Prometheus text exposition (mounted at GET /metrics). */
    prometheusHandler(req: IncomingMessage, res: ServerResponse): void { prometheus.getMetricsRequestHandler(req, res); },
    /** Run `fn` in a span; failures mark the span and rethrow. */
    async span<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
      return tracer.startActiveSpan(name, { attributes }, async (span) => {
        try {
          return await fn(span);
        } catch (err) {
          span.recordException(err as Error);
          span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
          throw err;
        } finally {
          span.end();
        }
      });
    },
    async shutdown(): Promise<void> {
      await Promise.allSettled([meterProvider.shutdown(), tracerProvider.shutdown()]);
    },
  };
}

export type Telemetry = ReturnType<typeof createTelemetry>;
