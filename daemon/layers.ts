/**
 * The stages of alignd and the stages each may import: the one table that
 * test/structure/layers.test.ts checks every import under daemon/ and adapters/ against.
 *
 * A stage is a folder: `daemon/<stage>/`, or `adapters/<kind>/` for the adapter stages; `main` is
 * the composition root, the files directly in daemon/ (main.ts and this table). A stage may always
 * import its own files. Data flows one way: following the table from any stage never leads back
 * to it, and only `main` wires concrete adapters. A new folder belongs to no stage until it is
 * added here, on purpose.
 */
export interface Stage {
  /** What the stage owns, in one line. */
  owns: string;
  /** The other stages it may import. */
  imports: readonly string[];
}

export const STAGES: Readonly<Record<string, Stage>> = {
  base: {
    owns: 'what every stage shares: typed errors, JSON logs, seeded randomness, model/version names, durable file writes',
    imports: [],
  },
  feedback: {
    owns: 'the alignd.feedback/v1 contract, pure: the event schema, validation, example derivation, the sink/source interfaces',
    imports: ['base'],
  },
  store: {
    owns: 'the replay buffer (SQLite): events, derived examples, training windows, round marks and outcomes, checkpoints, dead letters',
    imports: ['base', 'feedback'],
  },
  ingest: {
    owns: 'the ingest pipeline every source feeds (validate → dedupe → durable write → derive in chunks), retention on a schedule, the source config schemas',
    imports: ['base', 'feedback', 'store'],
  },
  engine: {
    owns: 'ONNX graph builder, reverse-mode autodiff, AdamW train steps and accumulation, onnxruntime sessions',
    imports: ['base'],
  },
  model: {
    owns: 'HF checkpoints and tokenizers, LoRA/PEFT adapters, forward and inference programs, KV-cache generation, the tiny model',
    imports: ['base', 'engine'],
  },
  stats: {
    owns: 'pure statistics shared by the gate, the judges\' calibration and probation: exact binomial and paired bounds, bounds of means, alpha spending over rounds; calibration error; anytime-valid tests and confidence sequences (betting), paired differences, rate evidence from counts',
    imports: ['base'],
  },
  policy: {
    owns: 'the per-model policy file: schema, loading, hot reload, edits (rollback by pin)',
    imports: ['base'],
  },
  gate: {
    owns: 'the pure gate: evidence in, decision out (decide, gatherEvidence, signatures, judge combination and calibration, the evidence/scorer/judge contracts)',
    imports: ['base', 'policy', 'stats'],
  },
  align: {
    owns: 'DPO-family/KTO training rounds, KL guards, the reward-model ensemble and safety judge (implementing the gate contracts)',
    imports: ['base', 'engine', 'model', 'store', 'policy', 'gate'],
  },
  registry: {
    owns: 'versions, manifests, the audit chain, promotion and reconcile, the server-target and publisher interfaces',
    imports: ['base'],
  },
  http: {
    owns: 'the HTTP server and the one route interface (Route, sendJson, readBody) through which stages offer routes',
    imports: ['base'],
  },
  telemetry: {
    owns: 'OpenTelemetry metrics and traces, the Prometheus handler, the ingest-rate history',
    imports: ['base'],
  },
  release: {
    owns: 'a gate run for a registered candidate, recording decisions and approvals, deploying by the policy mode, the admin routes',
    imports: ['base', 'policy', 'stats', 'gate', 'registry', 'http'],
  },
  canary: {
    owns: 'probation of a promoted version on live feedback: the sequential comparison, automatic rollback by a policy pin, its routes',
    imports: ['base', 'feedback', 'stats', 'store', 'policy', 'registry', 'release', 'http'],
  },
  remote: {
    owns: 'rounds on a remote training engine: the RemoteTrainer interface, driving a job to its end, the window export and the adapter\'s return (shared storage, checksums, verification), the job contract and its code',
    imports: ['base', 'store', 'model', 'policy'],
  },
  loop: {
    owns: 'per-model runtimes, the scheduler, one training round end to end (local or remote), the loop\'s routes',
    imports: ['base', 'feedback', 'store', 'engine', 'model', 'policy', 'align', 'gate', 'registry', 'release', 'http', 'telemetry', 'stats', 'canary', 'remote'],
  },
  demo: {
    owns: 'the simulated production of `alignd demo` (users, gold rule, unsafe pattern, the guard model that knows it) around a running loop, its policy and its measurement',
    imports: ['base', 'feedback', 'policy', 'stats', 'loop'],
  },
  config: {
    owns: 'the process config (data dir, HTTP, sources, engine, telemetry): schema, file, environment',
    imports: ['base', 'engine', 'feedback', 'ingest'],
  },
  cli: {
    owns: 'the commands that work without a running daemon (policy check, rollback, approve/deny, registry, send)',
    imports: ['base', 'config', 'policy', 'registry', 'release'],
  },
  main: {
    owns: 'the CLI entry and the one composition root: wires stages and concrete adapters (daemon/main.ts); this table',
    imports: ['base', 'feedback', 'store', 'ingest', 'engine', 'model', 'policy', 'gate', 'align', 'registry', 'http', 'telemetry',
      'stats', 'release', 'canary', 'loop', 'demo', 'config', 'cli', 'remote', 'adapters/sources', 'adapters/servers', 'adapters/publishers', 'adapters/judges', 'adapters/trainers'],
  },
  'adapters/sources': {
    owns: 'feedback sources: Kafka (with its dead-letter topic), HTTP intake, JSONL file tail',
    imports: ['base', 'feedback', 'ingest', 'http'],
  },
  'adapters/servers': {
    owns: 'server targets: vLLM, file-drop, webhook',
    imports: ['base', 'policy', 'registry'],
  },
  'adapters/trainers': {
    owns: 'remote training engines: Ray (the Jobs REST API)',
    imports: ['base', 'policy', 'remote'],
  },
  'adapters/publishers': {
    owns: 'promotion announcements on a Kafka topic',
    imports: ['base', 'registry'],
  },
  'adapters/judges': {
    owns: 'external safety judges: a guard or deliberative model behind an OpenAI-compatible chat-completions API',
    imports: ['base', 'gate'],
  },
};
