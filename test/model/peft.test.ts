// PEFT adapter directories: byte compatibility with what PEFT itself wrote, write→read identity,
// PEFT-style initialisation, and validation errors on read.
import t from 'tap';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AligndError } from '../../daemon/base/errors.js';
import { readModelSpec } from '../../daemon/model/hf-checkpoint.js';
import { initLora, loraScaling, loraTargets, type LoraConfig } from '../../daemon/model/lora.js';
import { adapterConfigJson, readPeftAdapter, writePeftAdapter, ADAPTER_CONFIG, ADAPTER_WEIGHTS } from '../../daemon/model/peft.js';
import { pyFloat, pyFloatRepr, pythonJsonDumps } from '../../daemon/model/pyjson.js';
import { fromFloat32, readSafetensors, toFloat32, writeSafetensors } from '../../daemon/model/safetensors.js';
import { ARCHS, PARITY } from './fixtures.js';

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'alignd-peft-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** PEFT writes target_modules from a Python set, whose order follows string hashing: sort it. */
function sortTargetModules(text: string): string {
  return text.replace(/("target_modules": \[\n)((?: {4}"[^"]*",?\n)+)( {2}\])/, (_m, open: string, body: string, close: string) => {
    const items = body.trim().split('\n').map((l) => l.trim().replace(/,$/, '')).sort();
    return open + items.map((x, i) => `    ${x}${i < items.length - 1 ? ',' : ''}`).join('\n') + '\n' + close;
  });
}

for (const arch of ARCHS) {
  t.test(`${arch}: an adapter PEFT wrote, read and written again by alignd, is the same bytes`, async (t) => {
    const { spec } = readModelSpec(join(PARITY, arch, 'model'));
    const src = join(PARITY, arch, 'adapter');
    const adapter = readPeftAdapter(src, spec);
    const out = tmp(t);
    writePeftAdapter(out, spec, adapter);
    t.ok(readFileSync(join(out, ADAPTER_WEIGHTS)).equals(readFileSync(join(src, ADAPTER_WEIGHTS))), 'adapter_model.safetensors identical');
    const theirs = sortTargetModules(readFileSync(join(src, ADAPTER_CONFIG), 'utf8'));
    t.equal(readFileSync(join(out, ADAPTER_CONFIG), 'utf8'), theirs, 'adapter_config.json identical (target_modules sorted)');
  });
}

t.test('write → read is the identity, including rsLoRA and a non-integer alpha', async (t) => {
  const { spec } = readModelSpec(join(PARITY, 'qwen2', 'model'));
  const cfg: LoraConfig = { r: 3, loraAlpha: 4.5, targetModules: ['q_proj', 'down_proj'], loraDropout: 0.1, useRslora: true, baseModelNameOrPath: 'Qwen/Qwen2-0.5B' };
  const a = initLora(spec, cfg, 5);
  for (const p of a.pairs.values()) p.b.forEach((_, i) => { p.b[i] = i * 0.01 - 0.05; });
  const dir = tmp(t);
  writePeftAdapter(dir, spec, a);
  const b = readPeftAdapter(dir, spec);
  t.same(b.config, { ...cfg, targetModules: ['down_proj', 'q_proj'] }, 'same config (target_modules written sorted)');
  t.same([...b.pairs.keys()], [...a.pairs.keys()]);
  for (const [k, p] of a.pairs) {
    t.same([...b.pairs.get(k)!.a], [...p.a], `${k} A`);
    t.same([...b.pairs.get(k)!.b], [...p.b], `${k} B`);
  }
  const json = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), 'utf8')) as Record<string, unknown>;
  t.match(json, { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 3, lora_alpha: 4.5, use_rslora: true, bias: 'none', use_dora: false, fan_in_fan_out: false, inference_mode: true });
  t.match(readFileSync(join(dir, ADAPTER_CONFIG), 'utf8'), /"lora_dropout": 0\.1,\n/);
  t.same(readSafetensors(join(dir, ADAPTER_WEIGHTS)).metadata, { format: 'pt' });
  t.ok(readSafetensors(join(dir, ADAPTER_WEIGHTS)).tensors.has('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'));
});

t.test('GPT-2 adapters use Conv1D keys and fan_in_fan_out', async (t) => {
  const { spec } = readModelSpec(join(PARITY, 'gpt2', 'model'));
  const a = initLora(spec, { r: 2, loraAlpha: 4, targetModules: ['c_attn', 'c_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null }, 1);
  t.same([...a.pairs.keys()], ['transformer.h.0.attn.c_attn', 'transformer.h.0.attn.c_proj', 'transformer.h.0.mlp.c_proj',
    'transformer.h.1.attn.c_attn', 'transformer.h.1.attn.c_proj', 'transformer.h.1.mlp.c_proj'], 'c_proj matches attention and MLP');
  t.match(adapterConfigJson(spec, a.config), /"fan_in_fan_out": true/);
  const cAttn = a.pairs.get('transformer.h.0.attn.c_attn')!;
  t.equal(cAttn.a.length, 2 * 16, 'A [r, in]');
  t.equal(cAttn.b.length, 48 * 2, 'B [out, r]');
});

t.test('initialisation as PEFT: A ~ U(±1/√in), B = 0, same seed same adapter', async (t) => {
  const { spec } = readModelSpec(join(PARITY, 'llama', 'model'));
  const cfg: LoraConfig = { r: 8, loraAlpha: 16, targetModules: ['down_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null };
  const a = initLora(spec, cfg, 42);
  const p = a.pairs.get('model.layers.0.mlp.down_proj')!;
  const bound = 1 / Math.sqrt(32);
  t.ok(p.a.every((v) => Math.abs(v) <= bound), 'within the Kaiming-uniform bound');
  t.ok(Math.max(...p.a.map(Math.abs)) > 0.9 * bound, 'uses the range');
  t.ok(p.b.every((v) => v === 0), 'B is zero');
  t.same([...initLora(spec, cfg, 42).pairs.get('model.layers.0.mlp.down_proj')!.a], [...p.a]);
  t.notSame([...initLora(spec, cfg, 43).pairs.get('model.layers.0.mlp.down_proj')!.a], [...p.a]);
  t.equal(loraScaling({ r: 16, loraAlpha: 32, useRslora: false }), 2);
  t.equal(loraScaling({ r: 16, loraAlpha: 32, useRslora: true }), 8);
});

t.test('Python float repr for config numbers', async (t) => {
  t.equal(pyFloatRepr(0), '0.0');
  t.equal(pyFloatRepr(0.05), '0.05');
  t.equal(pyFloatRepr(1e-5), '1e-05');
  t.equal(pyFloatRepr(16), '16.0');
  t.equal(pyFloatRepr(1e16), '1e+16');
  t.equal(pyFloatRepr(0.0001), '0.0001');
  // What Python printed for json.dumps({'b': 'Kö\x7f🙂\n', 'a': [1.5, 0.0, {}], 'c': []}, indent=2, sort_keys=True):
  const python = '{\n  "a": [\n    1.5,\n    0.0,\n    {}\n  ],\n  "b": "K\\u00f6\\u007f\\ud83d\\ude42\\n",\n  "c": []\n}';
  t.equal(pythonJsonDumps({ b: 'Kö\x7f🙂\n', a: [1.5, pyFloat(0), {}], c: [] }), python);
});

function readError(dir: string, arch = 'llama'): AligndError {
  const { spec } = readModelSpec(join(PARITY, arch, 'model'));
  try {
    readPeftAdapter(dir, spec);
  } catch (err) {
    if (err instanceof AligndError) return err;
    throw err;
  }
  throw new Error('expected the adapter to be refused');
}

function editedCopy(t: { teardown(fn: () => void): void }, edit: (cfg: Record<string, unknown>) => void): string {
  const dir = tmp(t);
  cpSync(join(PARITY, 'llama', 'adapter'), dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, ADAPTER_CONFIG), 'utf8')) as Record<string, unknown>;
  edit(cfg);
  writeFileSync(join(dir, ADAPTER_CONFIG), JSON.stringify(cfg));
  return dir;
}

t.test('adapters alignd cannot use are refused with the reason', async (t) => {
  const cases: Array<[string, (c: Record<string, unknown>) => void, RegExp]> = [
    ['DoRA', (c) => { c['use_dora'] = true; }, /DoRA/],
    ['rank mismatch', (c) => { c['r'] = 8; }, /shape \[4,16\], expected \[8,16\] \(r=8\)/],
    ['unknown target', (c) => { c['target_modules'] = ['q_proj', 'wq']; }, /target module "wq" does not exist.*q_proj, k_proj/],
    ['bias', (c) => { c['bias'] = 'all'; }, /bias "all"/],
    ['modules_to_save', (c) => { c['modules_to_save'] = ['lm_head']; }, /modules_to_save \(lm_head\)/],
    ['not LoRA', (c) => { c['peft_type'] = 'IA3'; }, /peft_type is "IA3"/],
    ['regex targets', (c) => { c['target_modules'] = '.*proj'; }, /pattern ".*proj"/],
    ['rank pattern', (c) => { c['rank_pattern'] = { q_proj: 2 }; }, /rank_pattern/],
    ['bad r', (c) => { c['r'] = 0; }, /adapter_config\.json is invalid: r/],
    // PEFT applies an aLoRA only from the invocation tokens on; applying it everywhere is silently wrong.
    ['aLoRA', (c) => { c['alora_invocation_tokens'] = [5, 9]; }, /alora_invocation_tokens.*activated LoRA.*every token/],
    ['exclude_modules', (c) => { c['exclude_modules'] = ['k_proj']; }, /exclude_modules \(k_proj\).*list the modules in target_modules/],
    ['BD-LoRA', (c) => { c['use_bdlora'] = { nblocks: 2 }; }, /use_bdlora.*block-diagonal/],
    ['trainable tokens', (c) => { c['trainable_token_indices'] = [3]; }, /trainable_token_indices/],
  ];
  for (const [name, edit, pattern] of cases) {
    const err = readError(editedCopy(t, edit));
    t.equal(err.code, 'ADAPTER_INVALID', `${name}: ADAPTER_INVALID`);
    t.match(err.message, pattern, `${name}: ${err.message}`);
  }
  // Targets that exist in another architecture only.
  t.match(readError(join(PARITY, 'llama', 'adapter'), 'gpt2').message, /"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)" does not exist in this gpt2 model.*c_attn, c_proj, c_fc/);
});

t.test('weights that disagree with the config are refused', async (t) => {
  const dir = tmp(t);
  cpSync(join(PARITY, 'llama', 'adapter'), dir, { recursive: true });
  const w = readSafetensors(join(dir, ADAPTER_WEIGHTS));
  const missing = new Map(w.tensors);
  missing.delete('base_model.model.model.layers.1.mlp.up_proj.lora_B.weight');
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), missing, { format: 'pt' });
  t.match(readError(dir).message, /lack base_model\.model\.model\.layers\.1\.mlp\.up_proj\.lora_B\.weight/);
  const extra = new Map(w.tensors);
  extra.set('base_model.model.lm_head.weight', fromFloat32(new Float32Array(4), [4]));
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), extra, { format: 'pt' });
  t.match(readError(dir).message, /tensors alignd does not know: base_model\.model\.lm_head\.weight/);
  rmSync(join(dir, ADAPTER_WEIGHTS));
  t.match(readError(dir).message, /no adapter_model\.safetensors/);
});

t.test('targets resolve by module name, matching PEFT suffix rules', async (t) => {
  const { spec } = readModelSpec(join(PARITY, 'llama', 'model'));
  const mods = loraTargets(spec, { r: 1, loraAlpha: 1, targetModules: ['model.layers.1.self_attn.q_proj', 'up_proj'], loraDropout: 0, useRslora: false, baseModelNameOrPath: null });
  t.same(mods.map((m) => m.path), ['model.layers.0.mlp.up_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.mlp.up_proj']);
});

t.test('adapters saved in BF16 read as float32', async (t) => {
  const { spec } = readModelSpec(join(PARITY, 'llama', 'model'));
  const dir = tmp(t);
  cpSync(join(PARITY, 'llama', 'adapter'), dir, { recursive: true });
  const w = readSafetensors(join(dir, ADAPTER_WEIGHTS));
  const bf16 = new Map([...w.tensors].map(([k, e]) => [k, fromFloat32(toFloat32(e), e.shape, 'BF16')]));
  writeSafetensors(join(dir, ADAPTER_WEIGHTS), bf16, { format: 'pt' });
  const a = readPeftAdapter(dir, spec);
  const f32 = readPeftAdapter(join(PARITY, 'llama', 'adapter'), spec);
  for (const [k, p] of f32.pairs) {
    const q = a.pairs.get(k)!;
    t.ok(p.a.every((v, i) => Math.abs(v - q.a[i]!) <= Math.abs(v) * 2 ** -8), `${k} A within bf16 rounding`);
  }
});
