/**
 * Real model sizes on one machine (issue 12): random-weight bf16 checkpoints (HF layout) with the
 * exact configs of Qwen2.5-0.5B, Llama-3.2-1B and Qwen2.5-3B (and Llama-3.1-8B with `--only 8b`),
 * each run by bench/sizes-run.ts in its own process — load, every session a round opens,
 * reference log-probs of 2 pairs × 256 tokens, 16-token generation, 10 DPO steps (LoRA r 16 on
 * q,k,v,o, 2 threads) with a KL check — and, when `.cache/venv-baseline` exists
 * (tools/baseline/run.sh makes it), the same workload in PyTorch + PEFT on the same checkpoint
 * (with gradient checkpointing when alignd recomputes, which it does unless --no-recompute).
 * One JSON line per engine and model, then one comparing them; the checkpoints are deleted.
 * Memory is the bar here (PSS is the physical figure, see bench/memory.ts); times are as measured
 * on a shared machine.
 *
 *   npm run bench:sizes -- [--only 0.5b,1b,3b|8b] [--steps 10] [--no-recompute] [--no-baseline] [--dir /tmp/x]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeRandomCheckpoint } from '../daemon/model/random-checkpoint.js';
import { arg } from './common.js';

const QWEN2 = {
  architectures: ['Qwen2ForCausalLM'], attention_dropout: 0, bos_token_id: 151643, eos_token_id: 151643, hidden_act: 'silu', initializer_range: 0.02,
  max_position_embeddings: 32768, model_type: 'qwen2', rms_norm_eps: 1e-6, rope_theta: 1000000, tie_word_embeddings: true, use_cache: true,
  use_sliding_window: false, vocab_size: 151936,
};
const LLAMA3 = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0, bos_token_id: 128000, eos_token_id: 128001, hidden_act: 'silu',
  initializer_range: 0.02, max_position_embeddings: 131072, mlp_bias: false, model_type: 'llama', pretraining_tp: 1, rms_norm_eps: 1e-5,
  rope_theta: 500000, use_cache: true, vocab_size: 128256,
};
const llama3Rope = (factor: number) => ({ factor, high_freq_factor: 4, low_freq_factor: 1, original_max_position_embeddings: 8192, rope_type: 'llama3' });

/** The models' config.json fields as published (Qwen/Qwen2.5-0.5B, meta-llama/Llama-3.2-1B, Qwen/Qwen2.5-3B, meta-llama/Llama-3.1-8B). */
export const SIZES: Record<string, { name: string; config: Record<string, unknown>; steps?: number }> = {
  '0.5b': { name: 'qwen2.5-0.5b', config: { ...QWEN2, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, max_window_layers: 24, sliding_window: 32768 } },
  '1b': { name: 'llama-3.2-1b', config: { ...LLAMA3, head_dim: 64, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, rope_scaling: llama3Rope(32), tie_word_embeddings: true } },
  '3b': { name: 'qwen2.5-3b', config: { ...QWEN2, hidden_size: 2048, intermediate_size: 11008, num_hidden_layers: 36, num_attention_heads: 16, num_key_value_heads: 2, max_window_layers: 36, sliding_window: 32768 } },
  '8b': { name: 'llama-3.1-8b', config: { ...LLAMA3, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, rope_scaling: llama3Rope(8), tie_word_embeddings: false }, steps: 1 },
};

const root = fileURLToPath(new URL('../..', import.meta.url));
const only = arg('only', '0.5b,1b,3b').split(',');
const recompute = !process.argv.includes('--no-recompute');
const python = join(root, '.cache', 'venv-baseline', 'bin', 'python');
const baseline = !process.argv.includes('--no-baseline') && existsSync(python);
if (!baseline && !process.argv.includes('--no-baseline')) console.error(`no ${python}: run tools/baseline/run.sh for the PyTorch baseline lines`);

function lastJson(out: string): Record<string, unknown> {
  const lines = out.trim().split('\n').filter((l) => l.startsWith('{'));
  return JSON.parse(lines[lines.length - 1]!) as Record<string, unknown>;
}

for (const key of only) {
  const size = SIZES[key];
  if (size === undefined) throw new Error(`unknown size ${key}; one of ${Object.keys(SIZES).join(', ')}`);
  const steps = arg('steps', String(size.steps ?? 10));
  const dir = mkdtempSync(join(arg('dir', tmpdir()), `alignd-sizes-${key}-`));
  try {
    writeRandomCheckpoint(dir, size.config, { dtype: 'BF16', seed: 12 });
    const ours = lastJson(execFileSync(process.execPath, [join(root, 'dist', 'bench', 'sizes-run.js'), dir, size.name, '--steps', steps, ...(recompute ? ['--recompute'] : [])],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 }));
    console.log(JSON.stringify({ bench: 'sizes', ...ours }));
    if (baseline) {
      // The same activation recomputation on both sides (PEFT's gradient_checkpointing, non-reentrant).
      const theirs = lastJson(execFileSync(python, [join(root, 'tools', 'baseline', 'sizes.py'), dir, size.name, '--steps', steps, ...(recompute ? ['--gradient-checkpointing'] : [])],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 }));
      console.log(JSON.stringify({ bench: 'sizes', ...theirs }));
      const n = (r: Record<string, unknown>, k: string): number => Number(r[k]);
      console.log(JSON.stringify({
        bench: 'sizes', model: size.name, compare: 'alignd / pytorch',
        peak_pss_ratio: +(n(ours, 'peak_pss_gb') / n(theirs, 'peak_pss_gb')).toFixed(2),
        peak_rss_ratio: +(n(ours, 'peak_rss_gb') / n(theirs, 'peak_rss_gb')).toFixed(2),
        step_ratio: +(n(ours, 'step_ms') / n(theirs, 'step_ms')).toFixed(2),
        alignd_step10_over_step2_pss: +(n(ours, 'pss_step10_gb') / n(ours, 'pss_step2_gb')).toFixed(3),
      }));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
