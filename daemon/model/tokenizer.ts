/**
 * Tokenization and chat-template rendering from a checkpoint's `tokenizer.json`,
 * `tokenizer_config.json` (and `chat_template.jinja`, where transformers 5 saves the template).
 *
 * Built on @huggingface/tokenizers + @huggingface/jinja rather than @huggingface/transformers:
 * those two are the very pieces transformers.js uses for this (same semantics), they take
 * already-read JSON so there is no hub/remote loading path to switch off, and they are small
 * (no ONNX runtime or model code pulled in beside our own engine).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { z } from 'zod';
import { AligndError } from '../base/errors.js';

export interface ChatMessage {
  role: string;
  content: string;
}

/** A prompt as feedback events carry it: plain text or chat messages. */
export type Prompt = string | ChatMessage[];

export interface PromptResponseTokens {
  /** Prompt then response token ids. */
  ids: number[];
  /** ids[0 .. promptLength) are the prompt (masked out of log-probs). */
  promptLength: number;
}

export interface ModelTokenizer {
  vocabSize: number;
  bosToken: string | null;
  eosToken: string | null;
  padToken: string | null;
  bosTokenId: number | null;
  eosTokenId: number | null;
  /** Pad id: pad_token, else eos (the usual fallback for causal LMs). */
  padTokenId: number | null;
  hasChatTemplate: boolean;
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  tokenToId(token: string): number | undefined;
  /** The chat template rendered to text, as transformers' apply_chat_template(tokenize=False). */
  renderChat(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
  /** Prompt ids: chat-rendered with the generation prompt when the model has a template. */
  encodePrompt(prompt: Prompt): number[];
  /**
   * Prompt and response ids for log-probs. Each side is tokenized on its own (no merge across
   * the boundary, as TRL's DPO does) and the response ends with the eos (end-of-turn) token
   * unless `appendEos` is false.
   */
  promptResponse(prompt: Prompt, response: string, opts?: { appendEos?: boolean }): PromptResponseTokens;
}

const addedTokenSchema = z.union([z.string(), z.looseObject({ content: z.string() })]).nullable().optional();
const tokenizerConfigSchema = z.looseObject({
  bos_token: addedTokenSchema,
  eos_token: addedTokenSchema,
  pad_token: addedTokenSchema,
  unk_token: addedTokenSchema,
  chat_template: z.union([z.string(), z.array(z.object({ name: z.string(), template: z.string() }))]).nullable().optional(),
  clean_up_tokenization_spaces: z.boolean().optional(),
  clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output: z.boolean().optional(),
});
const tokenizerJsonSchema = z.looseObject({
  model: z.looseObject({ type: z.string().optional() }),
  added_tokens: z.array(z.looseObject({ id: z.number().int(), content: z.string() })).optional(),
});

function tokenText(t: z.infer<typeof addedTokenSchema>): string | null {
  if (t === null || t === undefined) return null;
  return typeof t === 'string' ? t : t.content;
}

function readJson(path: string, what: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new AligndError('MODEL_INVALID', `cannot read ${what}`, { input: path, action: 'the checkpoint must include a valid tokenizer.json and tokenizer_config.json', cause: err });
  }
}

export function hasTokenizer(dir: string): boolean {
  return existsSync(join(dir, 'tokenizer.json'));
}

/** Build a tokenizer from already-parsed files (what `loadTokenizer` reads from a directory). */
export function createTokenizer(tokenizerJson: unknown, tokenizerConfig: unknown, chatTemplateFile: string | null = null,
  source = '<memory>'): ModelTokenizer {
  const tj = tokenizerJsonSchema.safeParse(tokenizerJson);
  if (!tj.success) throw new AligndError('MODEL_INVALID', `tokenizer.json is not a tokenizers file: ${tj.error.message}`, { input: source, action: 'save the tokenizer with transformers save_pretrained' });
  const tc = tokenizerConfigSchema.safeParse(tokenizerConfig);
  if (!tc.success) throw new AligndError('MODEL_INVALID', `tokenizer_config.json is invalid: ${tc.error.message}`, { input: source, action: 'fix tokenizer_config.json' });
  const cfg = tc.data;
  // transformers 5 ignores clean_up_tokenization_spaces for BPE models (the clean-up is meant for
  // WordPiece and strips real spaces before punctuation), unless the override flag is set. Real
  // Llama 3 configs set it to true; decoded text is re-tokenised for training, so it matters.
  const isBpe = tj.data.model.type === 'BPE';
  const cleanUp = (cfg.clean_up_tokenization_spaces ?? false)
    && (!isBpe || cfg.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output === true);
  const config = { ...cfg, clean_up_tokenization_spaces: cleanUp };
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson as object, config);
  } catch (err) {
    throw new AligndError('MODEL_UNSUPPORTED', `tokenizer.json could not be loaded: ${err instanceof Error ? err.message : String(err)}`, {
      input: source, action: 'use a tokenizer supported by tokenizers.js (BPE, WordPiece, Unigram)', cause: err,
    });
  }
  let templateText: string | null = chatTemplateFile;
  if (templateText === null && cfg.chat_template !== null && cfg.chat_template !== undefined) {
    templateText = typeof cfg.chat_template === 'string'
      ? cfg.chat_template
      : (cfg.chat_template.find((t) => t.name === 'default') ?? cfg.chat_template[0])?.template ?? null;
  }
  let template: Template | null = null;
  if (templateText !== null) {
    try {
      template = new Template(templateText);
    } catch (err) {
      throw new AligndError('MODEL_INVALID', 'chat template does not parse', { input: source, action: 'fix chat_template in tokenizer_config.json', cause: err });
    }
  }
  const bosToken = tokenText(cfg.bos_token);
  const eosToken = tokenText(cfg.eos_token);
  const padToken = tokenText(cfg.pad_token);
  const unkToken = tokenText(cfg.unk_token);
  const idOf = (t: string | null): number | null => (t === null ? null : tok.token_to_id(t) ?? null);
  const vocab = tok.get_vocab(true);
  let maxId = -1;
  for (const id of vocab.values()) if (id > maxId) maxId = id;
  const eosTokenId = idOf(eosToken);

  // The empty string too goes through the post-processor: transformers encodes "" as [bos].
  const encode = (text: string, opts: { addSpecialTokens?: boolean } = {}): number[] =>
    tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;

  const renderChat = (messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string => {
    if (template === null) {
      throw new AligndError('MODEL_INVALID', 'the tokenizer has no chat template', {
        input: source, action: 'use a chat/instruct checkpoint, or add chat_template to tokenizer_config.json',
      });
    }
    // The variables transformers passes to chat templates (jinja provides raise_exception itself).
    try {
      return template.render({
        messages, add_generation_prompt: opts.addGenerationPrompt ?? false,
        bos_token: bosToken ?? '', eos_token: eosToken ?? '', pad_token: padToken ?? '', unk_token: unkToken ?? '',
      });
    } catch (err) {
      throw new AligndError('EVENT_INVALID', `chat template refused the messages: ${err instanceof Error ? err.message : String(err)}`, {
        input: source, action: 'check the message roles and their order against what the model\'s chat template accepts', cause: err,
      });
    }
  };

  const encodePrompt = (prompt: Prompt): number[] => {
    if (template === null) {
      if (typeof prompt !== 'string') {
        throw new AligndError('MODEL_INVALID', 'chat messages given but the tokenizer has no chat template', { input: source, action: 'send plain-text prompts for base models' });
      }
      return encode(prompt, { addSpecialTokens: true });
    }
    const messages = typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt;
    // The template writes special tokens itself (bos included), so none are added again.
    return encode(renderChat(messages, { addGenerationPrompt: true }), { addSpecialTokens: false });
  };

  return {
    vocabSize: maxId + 1,
    bosToken, eosToken, padToken,
    bosTokenId: idOf(bosToken), eosTokenId, padTokenId: idOf(padToken) ?? eosTokenId,
    hasChatTemplate: template !== null,
    encode,
    decode: (ids, opts = {}) => (ids.length === 0 ? '' : tok.decode(ids, { skip_special_tokens: opts.skipSpecialTokens ?? false })),
    tokenToId: (t) => tok.token_to_id(t),
    renderChat,
    encodePrompt,
    promptResponse: (prompt, response, opts = {}) => {
      const p = encodePrompt(prompt);
      const r = encode(response, { addSpecialTokens: false });
      if ((opts.appendEos ?? true) && eosTokenId !== null) r.push(eosTokenId);
      return { ids: [...p, ...r], promptLength: p.length };
    },
  };
}

/** Load the tokenizer of a checkpoint directory. */
export function loadTokenizer(dir: string): ModelTokenizer {
  const tjPath = join(dir, 'tokenizer.json');
  if (!existsSync(tjPath)) {
    throw new AligndError('MODEL_INVALID', 'checkpoint has no tokenizer.json', {
      input: dir, action: 'save the tokenizer beside the model (tokenizer.save_pretrained(dir)); slow-only tokenizers are not supported',
    });
  }
  const tcPath = join(dir, 'tokenizer_config.json');
  const tc = existsSync(tcPath) ? readJson(tcPath, 'tokenizer_config.json') : {};
  const jinjaPath = join(dir, 'chat_template.jinja');
  const jinja = existsSync(jinjaPath) ? readFileSync(jinjaPath, 'utf8') : null;
  return createTokenizer(readJson(tjPath, 'tokenizer.json'), tc, jinja, dir);
}
