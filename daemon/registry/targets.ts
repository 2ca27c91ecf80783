/**
 * The interfaces promotion pushes through. Concrete inference-server adapters live in
 * adapters/servers/ (vLLM, file-drop, webhook); the Kafka announcer in adapters/; the composition
 * root wires them.
 */
import type { CanaryWeight } from './state.js';

export interface DeployRequest {
  model: string;
  version: string;
  /** Immutable server-side name `<model>-v<N>`. */
  name: string;
  /** The version's PEFT adapter directory in the registry (as alignd sees it). */
  adapterDir: string;
  adapterSha256: string;
  baseModel: string;
  /** Why it is deployed (`gate`, `pinned by policy (v3): ...`). */
  reason?: string;
  /** Staged rollout: the traffic share for `name`, the rest to the baseline; null: all traffic. */
  canary?: CanaryWeight | null;
}

/**
 * One server (or directory, or receiver) promotion pushes to. Every call takes an AbortSignal:
 * promotion gives each call a deadline and cancels calls of a superseded promotion or of a
 * stopping daemon, so an adapter must pass it to its I/O.
 */
export interface ServerTarget {
  /** Stable id for the registry's per-target state, e.g. `vllm:http://gpu-1:8000`. */
  readonly id: string;
  /** The adapter's own timeout per call; promotion's deadline for a call is a little longer. */
  readonly timeoutMs?: number;
  /**
   * Make `req.name` the served adapter; resolves only once the server confirms it. Idempotent.
   * Throws an AligndError with `permanent: true` when retrying cannot help (rank too large).
   */
  deploy(req: DeployRequest, signal?: AbortSignal): Promise<void>;
  /** Drop adapters of `model` other than `keep` (best effort; errors are reported, not fatal). */
  retire(model: string, keep: string[], signal?: AbortSignal): Promise<string[]>;
  /**
   * What the server itself says it serves of `model`: the `<model>-vN` names it lists. Absent
   * when the target has no listing (a webhook): then the record of acknowledged pushes stands in.
   */
  observe?(model: string, signal?: AbortSignal): Promise<string[]>;
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
  /** Staged rollout: route `weight` of traffic to `name` and the rest to `baseline_name`; null: all to `name`. */
  canary: CanaryWeight | null;
  /** The model's audit-chain head after this promotion: readers who keep it can detect a truncated log later. */
  audit_head: { seq: number; head: string; keyed: boolean };
}

export interface PromotionPublisher {
  publish(a: PromotionAnnouncement): Promise<void>;
}

export const PROMOTIONS_TOPIC = 'alignd.promotions';
