/**
 * The tiny built-in model's tokenizer: byte-level BPE (GPT-2's byte↔unicode alphabet, so every
 * string round-trips), merges learned deterministically from a small embedded corpus, ChatML
 * special tokens and chat template. Written as `tokenizer.json` + `tokenizer_config.json` that
 * the Rust `tokenizers` library and tokenizers.js both read.
 */

/** GPT-2's `bytes_to_unicode`: printable bytes map to themselves, the rest to 256 + n. */
export function bytesToUnicode(): string[] {
  const printable = (b: number): boolean => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(printable(b) ? b : 256 + n++));
  return out;
}

/** GPT-2 pre-tokenization pattern (the ByteLevel pre-tokenizer's). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Our own text (no third-party prose); BPE merges are learned from it. */
const CORPUS = [
  'The assistant answers the question with care and says when it does not know.',
  'A user asked for a short summary of the report, and the assistant wrote three clear sentences.',
  'Feedback from users comes in as thumbs up, thumbs down, ratings, edits and preferences.',
  'The daemon reads the feedback, stores it, and trains a small adapter for the model.',
  'Each update is small and checked before it is served to anyone.',
  'Please explain how the training round works, step by step.',
  'First the data is sampled, then the reward model is updated, then the policy is trained.',
  'If the new version is worse, it is not promoted and the old one stays in service.',
  'What is the capital of France? Paris is the capital of France.',
  'How many days are there in a week? There are seven days in a week.',
  'Write a haiku about the sea: waves fold into foam, the tide keeps its quiet time, salt on the wind.',
  'Thank you for the help! You are welcome, I am happy to help with that.',
  'The numbers 1, 2, 3, 10, 42 and 2026 appear in this line for digits.',
  'I cannot help with that request, but I can suggest a safer alternative.',
  'Here is the code: function add(a, b) { return a + b; }',
  'the and to of in is it that for on with as was at by be this are or from',
];

export interface TinyTokenizerFiles {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  vocabSize: number;
}

export const TINY_SPECIAL_TOKENS = ['<s>', '<pad>', '<|im_start|>', '<|im_end|>'] as const;

/** ChatML, with bos first; written as one line so Jinja block trimming cannot change it. */
export const TINY_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
  + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** Learn `numMerges` BPE merges: most frequent adjacent pair, ties broken by the pair's text. */
function learnMerges(words: Map<string, number>, alphabet: string[], numMerges: number): Array<[string, string]> {
  const byteOf = new TextEncoder();
  const seqs: Array<{ syms: string[]; count: number }> = [];
  for (const [word, count] of words) seqs.push({ syms: [...byteOf.encode(word)].map((b) => alphabet[b]!), count });
  const vocab = new Set(alphabet);
  const merges: Array<[string, string]> = [];
  while (merges.length < numMerges) {
    const counts = new Map<string, number>();
    for (const { syms, count } of seqs) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = `${syms[i]}\u0000${syms[i + 1]}`;
        counts.set(key, (counts.get(key) ?? 0) + count);
      }
    }
    let best: string | null = null;
    let bestCount = 0;
    for (const [key, c] of counts) {
      if (vocab.has(key.replace('\u0000', ''))) continue; // would duplicate an existing token
      if (c > bestCount || (c === bestCount && best !== null && key < best)) {
        best = key;
        bestCount = c;
      }
    }
    if (best === null) break;
    const [a, b] = best.split('\u0000') as [string, string];
    merges.push([a, b]);
    vocab.add(a + b);
    for (const s of seqs) {
      const next: string[] = [];
      for (let i = 0; i < s.syms.length; i++) {
        if (i + 1 < s.syms.length && s.syms[i] === a && s.syms[i + 1] === b) {
          next.push(a + b);
          i++;
        } else next.push(s.syms[i]!);
      }
      s.syms = next;
    }
  }
  return merges;
}

export function tinyTokenizer(vocabSize: number): TinyTokenizerFiles {
  const alphabet = bytesToUnicode();
  const words = new Map<string, number>();
  for (const line of CORPUS) for (const m of line.matchAll(GPT2_SPLIT)) words.set(m[0], (words.get(m[0]) ?? 0) + 1);
  const numMerges = vocabSize - 256 - TINY_SPECIAL_TOKENS.length;
  const merges = learnMerges(words, alphabet, numMerges);
  if (merges.length !== numMerges) throw new Error(`tiny tokenizer corpus yields only ${merges.length} merges, ${numMerges} wanted`);
  const vocab: Record<string, number> = {};
  alphabet.forEach((c, i) => { vocab[c] = i; });
  merges.forEach(([a, b], i) => { vocab[a + b] = 256 + i; });
  const firstSpecial = 256 + merges.length;
  const addedTokens = TINY_SPECIAL_TOKENS.map((content, i) => ({
    id: firstSpecial + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, trim_offsets: false },
    decoder: byteLevel,
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges,
    },
  };
  const addedTokensDecoder: Record<string, unknown> = {};
  for (const t of addedTokens) {
    addedTokensDecoder[String(t.id)] = { content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true };
  }
  const tokenizerConfig = {
    added_tokens_decoder: addedTokensDecoder,
    bos_token: '<s>',
    chat_template: TINY_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    model_max_length: 256,
    pad_token: '<pad>',
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  return { tokenizerJson, tokenizerConfig, vocabSize };
}
