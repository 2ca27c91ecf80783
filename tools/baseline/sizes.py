"""PyTorch + PEFT baseline of `npm run bench:sizes` (one model per process, so its memory is its own).

Same workload as bench/sizes-run.ts on the same checkpoint directory: load (bf16, SDPA), LoRA r 16
on q,k,v,o (PEFT), reference log-probs of 2 pairs x 256 random tokens, 16-token greedy generation,
DPO steps (sigmoid loss, beta 0.1, AdamW on the LoRA weights, float32 LoRA and optimizer state),
a KL(policy || base) pass over 2 rows after step 5. Prints one JSON line with the bench's fields.
Memory: RSS and peak RSS from /proc (ru_maxrss), PSS from /proc/self/smaps_rollup, sampled by a
thread every 200 ms.

    .cache/venv-baseline/bin/python tools/baseline/sizes.py <checkpoint dir> <name> [--steps 10] [--threads 2] [--gradient-checkpointing]
"""
import argparse
import json
import re
import resource
import statistics
import threading
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def proc_gb(path, key):
    with open(path) as f:
        m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) / 2**20 if m else float("nan")


def rss():
    return proc_gb("/proc/self/status", "VmRSS")


def pss():
    return proc_gb("/proc/self/smaps_rollup", "Pss")


class PssSampler:
    def __init__(self):
        self.peak = pss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.2):
            self.peak = max(self.peak, pss())


def seq_logps(model, ids, mask, targets, target_mask):
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    lp = torch.gather(F.log_softmax(logits, -1), -1, targets.unsqueeze(-1)).squeeze(-1)
    return (lp * target_mask).sum(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("name")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    sampler = PssSampler()
    P, T = 2, 256

    t0 = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    cfg = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0)
    model = get_peft_model(base, cfg)
    for n, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.float()  # LoRA weights and their optimizer state in float32, as alignd keeps them
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in base.parameters())

    V = base.config.vocab_size
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, V, (2 * P, T), generator=g)
    mask = torch.ones_like(ids)
    targets = torch.cat([ids[:, 1:], ids[:, :1]], 1)
    target_mask = torch.zeros(2 * P, T)
    target_mask[:, T // 2 - 1 : T - 1] = 1

    t = time.perf_counter()
    with torch.no_grad(), model.disable_adapter():
        ref = seq_logps(model, ids, mask, targets, target_mask)
    logprobs_ms = (time.perf_counter() - t) * 1000

    t = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=ids[:P, : T // 2], attention_mask=mask[:P, : T // 2], max_new_tokens=16, min_new_tokens=16, do_sample=False)
    generate_ms = (time.perf_counter() - t) * 1000

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0)
    step_ms, after, kl_ms = [], {}, float("nan")
    for s in range(1, a.steps + 1):
        t = time.perf_counter()
        lp = seq_logps(model, ids, mask, targets, target_mask)
        logits = 0.1 * ((lp[:P] - ref[:P]) - (lp[P:] - ref[P:]))
        loss = -F.logsigmoid(logits).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        step_ms.append((time.perf_counter() - t) * 1000)
        after[s] = (rss(), pss())
        if s == min(5, a.steps):
            t = time.perf_counter()
            with torch.no_grad():
                lq = F.log_softmax(model(input_ids=ids[:P], attention_mask=mask[:P]).logits.float(), -1)
                with model.disable_adapter():
                    lr = F.log_softmax(model(input_ids=ids[:P], attention_mask=mask[:P]).logits.float(), -1)
                ((lq.exp() * (lq - lr)).sum(-1) * target_mask[:P]).sum()
            kl_ms = (time.perf_counter() - t) * 1000
    sampler.stop.set()
    last, second = after[a.steps], after[min(2, a.steps)]
    r = lambda x: round(x, 2)
    print(json.dumps({
        "engine": "pytorch", "model": a.name, "dtype": "bf16", "params": params, "recompute": a.gradient_checkpointing, "threads": a.threads,
        "load_s": r(load_s), "session_s": 0, "logprobs_ms": round(logprobs_ms), "generate_ms": round(generate_ms),
        "first_step_ms": round(step_ms[0]), "step_ms": round(statistics.median(step_ms[1:] or step_ms)), "kl_ms": round(kl_ms),
        "rss_step2_gb": r(second[0]), "rss_step10_gb": r(last[0]), "pss_step2_gb": r(second[1]), "pss_step10_gb": r(last[1]),
        "peak_rss_gb": r(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20), "peak_pss_gb": r(max(sampler.peak, pss())), "steps": a.steps,
    }))


if __name__ == "__main__":
    main()
