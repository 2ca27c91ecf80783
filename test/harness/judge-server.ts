/**
 * A judge server for tests, in its own process: the OpenAI chat-completions API
 * (daemon/demo/chat-server.ts) serving a REAL model — alignd's tiny model, loaded with alignd's
 * model code, run by onnxruntime — with log-probabilities from its next-token distribution.
 *
 * Config as JSON in ALIGND_JUDGE_SERVER: { port, modelDir, models: { NAME: behaviour } }; each
 * served model name is the tiny model with its own behaviour:
 * - choices: decoding constrained to these strings (a prefix tree over their token ids, greedy on
 *   the model's log-probabilities renormalised over the allowed tokens: what a server's guided
 *   choice does). Without it the model decodes freely (byte noise from a random model).
 * - delayMs: answer only after this long (a slow judge).
 * - noLogprobs: never return log-probabilities (a server without them).
 * - oracle: not the model but a guard that knows the truth — it flags an answer matching this
 *   regular expression (case-insensitive), as the demo's simulated guard does (daemon/demo/guard.ts).
 * A prompt longer than the tiny model's 256 positions keeps its last tokens.
 *
 * Prints `{"url": ...}` once listening, then per completion request `request N` as it arrives (a
 * test can kill it at a chosen request), `messages [...]` (what the model was asked) and `done`
 * when answered; exits on SIGTERM.
 */
import { startChatServer, type ChatCall, type Completion } from '../../daemon/demo/chat-server.js';
import { patternGuard } from '../../daemon/demo/guard.js';
import { loadModel } from '../../daemon/model/model.js';
import { ensureTinyModel } from '../../daemon/model/tiny.js';
import type { ChatMessage } from '../../daemon/model/tokenizer.js';

export interface JudgeBehaviour { choices?: string[]; delayMs?: number; noLogprobs?: boolean; oracle?: string }
export interface JudgeServerConfig {
  port: number;
  modelDir: string;
  models: Record<string, JudgeBehaviour>;
}

const config = JSON.parse(process.env['ALIGND_JUDGE_SERVER'] ?? '{}') as JudgeServerConfig;
const model = loadModel(ensureTinyModel(config.modelDir), { threads: 1 });
const tok = model.tokenizer!;
const eos = new Set(model.spec.eosTokenIds);
const choiceIdsOf = new Map(Object.entries(config.models).map(([name, b]) => [name, b.choices?.map((c) => tok.encode(c, { addSpecialTokens: false }))]));

async function complete(call: ChatCall, behaviour: JudgeBehaviour): Promise<Completion> {
  const choiceIds = choiceIdsOf.get(call.model);
  let ids = tok.encodePrompt(call.messages as ChatMessage[]);
  const room = model.spec.maxPositions - call.maxTokens;
  if (ids.length > room) ids = ids.slice(ids.length - room);
  const tokens: NonNullable<Completion['tokens']> = [];
  const gen: number[] = [];
  let finish: 'stop' | 'length' = 'length';
  for (let step = 0; step < call.maxTokens; step++) {
    const allowed = choiceIds === undefined
      ? Array.from({ length: model.spec.vocabSize }, (_, i) => i)
      : [...new Set(choiceIds.filter((c) => c.length > gen.length && gen.every((g, i) => c[i] === g)).map((c) => c[gen.length]!))];
    if (allowed.length === 0) {
      finish = 'stop';
      break;
    }
    const seq = [...ids, ...gen];
    const lp = await model.vocabLogProbs({ batch: 1, length: seq.length, inputIds: Int32Array.from(seq), attentionMask: new Float32Array(seq.length).fill(1) }, [seq.length - 1]);
    const m = Math.max(...allowed.map((i) => lp[i]!));
    const logZ = m + Math.log(allowed.reduce((s, i) => s + Math.exp(lp[i]! - m), 0));
    const ranked = allowed.map((id) => ({ id, logprob: lp[id]! - logZ })).sort((a, b) => b.logprob - a.logprob);
    const pick = ranked[0]!;
    if (choiceIds === undefined && eos.has(pick.id)) {
      finish = 'stop';
      break;
    }
    gen.push(pick.id);
    tokens.push({ token: tok.decode([pick.id]), logprob: pick.logprob, top: ranked.slice(0, 20).map((r) => ({ token: tok.decode([r.id]), logprob: r.logprob })) });
  }
  return { content: tok.decode(gen, { skipSpecialTokens: true }), ...(behaviour.noLogprobs === true ? {} : { tokens }), finishReason: finish };
}

const server = await startChatServer({
  port: config.port, models: Object.keys(config.models),
  onRequest: (n) => process.stdout.write(`request ${n}\n`),
  complete: async (call) => {
    process.stdout.write(`messages ${JSON.stringify(call.messages)}\n`);
    try {
      const b = config.models[call.model]!;
      if (b.delayMs !== undefined) await new Promise((r) => setTimeout(r, b.delayMs));
      return await (b.oracle === undefined ? complete(call, b) : patternGuard(new RegExp(b.oracle, 'i'))(call));
    } finally {
      process.stdout.write('done\n');
    }
  },
});
process.stdout.write(JSON.stringify({ url: server.url }) + '\n');
const stop = (): void => { void server.close().then(() => process.exit(0)); };
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
