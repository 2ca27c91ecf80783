// Writes what alignd produces, for make_fixtures.py's `check` phase to load with the real libraries:
// a PEFT adapter per parity architecture (alignd's writer, non-zero A and B), and the tiny built-in
// model (plus the sha256 of each of its files, which the tests compare to prove it is deterministic).
// Needs `npm run build` first.
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readModelSpec } from '../../dist/daemon/model/hf-checkpoint.js';
import { initLora } from '../../dist/daemon/model/lora.js';
import { writePeftAdapter } from '../../dist/daemon/model/peft.js';
import { createRng } from '../../dist/daemon/base/random.js';
import { tinyModelFiles, writeTinyModel } from '../../dist/daemon/model/tiny.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const out = join(root, 'test/fixtures/parity');

export const ALIGND_ADAPTERS = {
  llama: { targetModules: ['q_proj', 'v_proj', 'down_proj'], useRslora: false },
  llama3: { targetModules: ['k_proj', 'o_proj', 'gate_proj'], useRslora: true },
  mistral: { targetModules: ['v_proj', 'up_proj'], useRslora: false },
  qwen2: { targetModules: ['q_proj', 'k_proj', 'o_proj'], useRslora: false },
  gpt2: { targetModules: ['c_attn', 'c_fc'], useRslora: false },
};

for (const [arch, t] of Object.entries(ALIGND_ADAPTERS)) {
  const { spec } = readModelSpec(join(out, arch, 'model'));
  const cfg = { r: 2, loraAlpha: 5, loraDropout: 0.1, baseModelNameOrPath: `${arch}/model`, ...t };
  const adapter = initLora(spec, cfg, 99);
  const rng = createRng(7);
  for (const p of adapter.pairs.values()) for (let i = 0; i < p.b.length; i++) p.b[i] = rng.uniform(-0.5, 0.5);
  writePeftAdapter(join(out, arch, 'alignd-adapter'), spec, adapter);
  console.log(`${arch}: alignd adapter written`);
}

writeTinyModel(join(root, '.cache/parity/tiny'));
const hashes = {};
for (const [name, bytes] of tinyModelFiles()) hashes[name] = createHash('sha256').update(bytes).digest('hex');
writeFileSync(join(out, 'tiny-files.json'), JSON.stringify(hashes, null, 2) + '\n');
console.log('tiny model written to .cache/parity/tiny');
