/**
 * The interfaces promotion pushes through. Concrete inference-server adapters live in
 * adapters/servers/ (vLLM, file-drop, webhook); the Kafka announcer in adapters/; the composition
 * root wires them.
 */
export interface DeployRequest {
  model: string;
  version: string;
  /** Immutable server-side name `<model>-v<N>`. */
  name: string;
  /** The version's PEFT adapter directory in the registry (as alignd sees it). */
  adapterDir: string;
  adapterSha256: string;
  baseModel: string;
}

export interface ServerTarget {
  /** Stable id for the registry's per-target state, e.g. `vllm:http://gpu-1:8000`. */
  readonly id: string;
  /** Make `req.name` the served adapter; resolves only once the server confirms it. Idempotent. */
  deploy(req: DeployRequest): Promise<void>;
  /** Drop adapters of `model` other than `keep` (best effort; errors are reported, not fatal). */
  retire(model: string, keep: string[]): Promise<string[]>;
}

/** What is announced after a complete promotion (Kafka topic `alignd.promotions`, key = model). */
export interface PromotionAnnouncement {
  schema: 'alignd.promotion/v1';
  model: string;
  version: string;
  name: string;
  previous: string | null;
  reason: string;
  adapter_sha256: string;
  ts: string;
}

export interface PromotionPublisher {
  publish(a: PromotionAnnouncement): Promise<void>;
}

export const PROMOTIONS_TOPIC = 'alignd.promotions';
