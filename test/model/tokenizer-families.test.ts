// tokenizers.js against the Rust tokenizers library on tiny tokenizers in the layouts real model
// families use (Llama 3 / Qwen2 regex split + byte-level BPE; Llama 2 / Mistral Metaspace BPE with
// byte fallback), trained by the parity tool: same ids and same decoded text for tricky inputs.
import t from 'tap';
import { join } from 'node:path';
import { loadTokenizer } from '../../daemon/model/tokenizer.js';
import { PARITY, readJson } from './fixtures.js';

for (const family of ['bytelevel-split', 'metaspace-bytefallback']) {
  t.test(family, async (t) => {
    const tok = loadTokenizer(join(PARITY, 'tokenizers', family));
    const probes = readJson<Array<{ text: string; ids: number[]; decoded: string }>>('tokenizers', family, 'probes.json');
    t.ok(probes.length >= 10);
    for (const p of probes) {
      t.same(tok.encode(p.text, { addSpecialTokens: false }), p.ids, `encode ${JSON.stringify(p.text)}`);
      t.equal(tok.decode(p.ids), p.decoded, `decode ${JSON.stringify(p.text)}`);
    }
    t.not(tok.eosTokenId, null, 'eos resolved from tokenizer_config.json');
  });
}
