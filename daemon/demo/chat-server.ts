/**
 * A small HTTP server speaking the OpenAI chat-completions API (POST /v1/chat/completions, GET
 * /v1/models) around any completion function: the demo's simulated guard model runs behind it,
 * and so does the test harness's real tiny model. Log-probabilities are returned in the API's
 * shape (`choices[0].logprobs.content[i] = {token, logprob, bytes, top_logprobs}`) when the request
 * asks for them and the completion has them.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface ChatTurn { role: string; content: string }

export interface ChatCall {
  model: string;
  messages: ChatTurn[];
  maxTokens: number;
  temperature: number;
  logprobs: boolean;
  topLogprobs: number;
}

export interface TokenChoice { token: string; logprob: number }
export interface Completion {
  content: string;
  /** One entry per generated token: the token, its log-probability, and the most likely alternatives. */
  tokens?: Array<TokenChoice & { top: TokenChoice[] }>;
  finishReason?: 'stop' | 'length';
}

/** A request the completion function refuses to serve: answered with this status and message. */
export class ChatRequestError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export interface ChatServerOptions {
  host?: string;
  port: number;
  /** The model names the server answers for (GET /v1/models); a request for another is a 404. */
  models: readonly string[];
  complete: (call: ChatCall) => Promise<Completion>;
  /** Seen before each completion request is handled (tests count and time requests). */
  onRequest?: (n: number) => void;
}

export interface ChatServer {
  url: string;
  port: number;
  server: Server;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}
const apiError = (res: ServerResponse, status: number, message: string): void => send(res, status, { error: { message, type: status >= 500 ? 'InternalServerError' : 'BadRequestError', code: status } });

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let raw = '';
  for await (const chunk of req) raw += (chunk as Buffer).toString('utf8');
  const v: unknown = JSON.parse(raw);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ChatRequestError(400, 'the body must be a JSON object');
  return v as Record<string, unknown>;
}

function callOf(body: Record<string, unknown>, models: readonly string[]): ChatCall {
  const messages = body['messages'];
  if (!Array.isArray(messages) || messages.length === 0 || !messages.every((m) => typeof m?.role === 'string' && typeof m?.content === 'string')) {
    throw new ChatRequestError(400, 'messages must be a non-empty list of {role, content}');
  }
  const model = body['model'];
  if (typeof model !== 'string' || !models.includes(model)) throw new ChatRequestError(404, `The model \`${String(model)}\` does not exist.`);
  const num = (k: string, d: number): number => (typeof body[k] === 'number' ? body[k] : d);
  return {
    model, messages: messages as ChatTurn[], maxTokens: num('max_tokens', 256), temperature: num('temperature', 1),
    logprobs: body['logprobs'] === true, topLogprobs: Math.min(20, num('top_logprobs', 0)),
  };
}

export async function startChatServer(o: ChatServerOptions): Promise<ChatServer> {
  let n = 0;
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (req.method === 'GET' && path === '/v1/models') return send(res, 200, { object: 'list', data: o.models.map((id) => ({ id, object: 'model', owned_by: 'alignd' })) });
    if (req.method !== 'POST' || path !== '/v1/chat/completions') return send(res, 404, { detail: 'Not Found' });
    n++;
    o.onRequest?.(n);
    void (async () => {
      try {
        const call = callOf(await readJson(req), o.models);
        const c = await o.complete(call);
        const logprobs = call.logprobs && c.tokens !== undefined
          ? { content: c.tokens.map((t) => ({ token: t.token, logprob: t.logprob, bytes: [...Buffer.from(t.token)], top_logprobs: t.top.slice(0, call.topLogprobs).map((x) => ({ ...x, bytes: [...Buffer.from(x.token)] })) })) }
          : null;
        send(res, 200, {
          id: `chatcmpl-${n}`, object: 'chat.completion', created: Math.floor(Date.now() / 1000), model: call.model,
          choices: [{ index: 0, message: { role: 'assistant', content: c.content }, logprobs, finish_reason: c.finishReason ?? 'stop' }],
          usage: { prompt_tokens: 0, completion_tokens: c.tokens?.length ?? 0, total_tokens: c.tokens?.length ?? 0 },
        });
      } catch (err) {
        if (err instanceof ChatRequestError) apiError(res, err.status, err.message);
        else if (err instanceof SyntaxError) apiError(res, 400, `the body is not JSON: ${err.message}`);
        else apiError(res, 500, (err as Error).message);
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : o.port;
  return {
    url: `http://${o.host ?? '127.0.0.1'}:${port}/v1`, port, server,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}
