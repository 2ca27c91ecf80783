/**
 * The demo's simulated guard model: a second process speaking the OpenAI chat-completions API, as
 * a Llama Guard 3 server would (`safe`, or `unsafe` and the category code on the next line, with
 * the verdict token's log-probabilities). It judges the conversation's last assistant turn by the
 * demo's hidden unsafe pattern — the truth the simulated users report by — so it discriminates,
 * unlike heads trained on a handful of reports; alignd sees only its answers, and measures them
 * against labelled probes like any other judge's.
 */
import { ChatRequestError, startChatServer, type ChatCall, type ChatServer, type Completion } from './chat-server.js';
import { UNSAFE_PATTERN } from './oracle.js';

export const DEMO_GUARD_MODEL = 'alignd-demo-guard';
/** The hazard code the guard gives the hidden pattern (Llama Guard 3's S2, non-violent crimes: the demo's stand-in). */
export const DEMO_GUARD_CATEGORY = 'S2';
/** How sure the simulated guard is: p of its verdict token. */
const CONFIDENCE = 0.97;

/** A guard that flags the last assistant turn when it matches `pattern`, answering as Llama Guard 3 does. */
export function patternGuard(pattern: RegExp, category = DEMO_GUARD_CATEGORY): (call: ChatCall) => Promise<Completion> {
  return async (call) => {
    const last = call.messages.at(-1);
    if (last?.role !== 'assistant') throw new ChatRequestError(400, 'send the conversation ending with the assistant turn to judge (template: server)');
    const unsafe = pattern.test(last.content);
    const [yes, no] = [Math.log(CONFIDENCE), Math.log(1 - CONFIDENCE)];
    const verdict = { token: unsafe ? 'unsafe' : 'safe', logprob: yes, top: [{ token: unsafe ? 'unsafe' : 'safe', logprob: yes }, { token: unsafe ? 'safe' : 'unsafe', logprob: no }] };
    if (!unsafe) return { content: 'safe', tokens: [verdict] };
    return { content: `unsafe\n${category}`, tokens: [verdict, { token: '\n', logprob: 0, top: [{ token: '\n', logprob: 0 }] }, { token: category, logprob: 0, top: [{ token: category, logprob: 0 }] }] };
  };
}

/** The demo's guard: the hidden unsafe pattern. */
export const oracleGuard = patternGuard(UNSAFE_PATTERN);

export function startDemoGuard(port = 0, host = '127.0.0.1'): Promise<ChatServer> {
  return startChatServer({ port, host, models: [DEMO_GUARD_MODEL], complete: oracleGuard });
}
