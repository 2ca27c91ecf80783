/**
 * The serving engine as an evaluator (policy `evaluation.engine: serving`): for bases too large
 * for the local engine, the gate's evidence comes from the inference server that serves the model.
 * A candidate is loaded under a private name (`<model>-eval-vN`, never announced), asked for
 * log-probs of held-out sequences and for probe answers, then unloaded. adapters/servers/vllm-eval.ts
 * implements it on vLLM's OpenAI-compatible API.
 */

/** One prompt position's log-probs as the server returns them. */
export interface PositionLogprobs {
  /** log π(actual token | prefix). */
  actual: number;
  /** The server's top-k at this position: [token id, log-prob], k = the request's topK. */
  top: Array<[number, number]>;
}

export interface Sampling { maxTokens: number; temperature: number; topP: number; seed: number }

export interface ServingEngine {
  /** Stable id for logs, e.g. `vllm:http://vllm:8000`. */
  readonly id: string;
  /** Load an adapter directory (alignd's path; the engine maps it to its own view) under `name`. */
  load(name: string, adapterDir: string, signal?: AbortSignal): Promise<void>;
  unload(name: string): Promise<void>;
  /** Positions 1..n−1 of `ids` (position 0 has no prefix), under the model or adapter named `model`. */
  promptLogprobs(model: string, ids: number[], topK: number, signal?: AbortSignal): Promise<PositionLogprobs[]>;
  /** One answer per prompt: its text and its length in generated tokens (the server's count; the gate's length unit). */
  complete(model: string, prompts: readonly string[], sampling: Sampling, signal?: AbortSignal): Promise<Array<{ text: string; tokens: number }>>;
}

/** The private name of a version loaded for evaluation. */
export const evalName = (model: string, version: string): string => `${model}-eval-${version}`;
