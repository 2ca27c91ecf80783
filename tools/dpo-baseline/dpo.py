"""PyTorch baseline of `npm run bench:align` (issue 18): the same configurations on the same data.

Reads what bench/realistic.ts exported to DIR: the mid-20M checkpoint (DIR/model, float32 here as
alignd computes in float32) and DIR/workload.json (LoRA shape, beta, the fixed-length shape, the
realistic pairs and their micro-batch size, the generation prompts). Runs, with 2 threads:

- PyTorch + PEFT (SDPA attention), hand-written loop as a TRL user's model sees it:
  * fixed: one DPO step on 2P random rows of T tokens (prompt T/4), cached reference log-probs,
    sigmoid loss, backward, clip, AdamW (the mid-20M line of bench:align);
  * logprobs: the forward log-prob pass over the same rows (no grad);
  * realistic: one optimizer step over the realistic pairs, micro-batches of `micro_pairs` pairs
    padded right to their longest row (as alignd pads today), gradients accumulated;
  * generation: sampled generation (temperature 1, top-p 0.95) of 32 new tokens from the 8 prompts,
    left-padded, KV cache.
- TRL's DPOTrainer with its default collation (DataCollatorForPreference: prompt + completion, right
  padding to the batch's longest), on the realistic and the fixed pairs: per_device_train_batch_size =
  micro_pairs, gradient accumulation to P pairs, float32, no gradient checkpointing (alignd does not
  recompute), max_length None (the data fits; TRL's 1024 default would cut prompts), reference
  log-probs cached before training (as alignd's round caches them), sequential batches so each step
  sees alignd's micro-batches. Step time: between consecutive on_step_end callbacks (collation
  included), the first step (warm-up) dropped.

tokens_per_s counts real tokens (padding excluded), the same count as alignd's line. One JSON line
per engine and configuration.

    .cache/venv-baseline/bin/python tools/dpo-baseline/dpo.py DIR [--threads 2] [--iters 2] [--no-trl]
"""
import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def timed(fn, iters):
    fn()  # warm-up
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1000)
    return statistics.median(ms)


def pad_rows(rows, pad_id):
    """rows: [(ids, prompt_len)] -> ids, attention mask, next-token targets, response target mask (right padding)."""
    T = max(len(ids) for ids, _ in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    targets = torch.zeros(B, T, dtype=torch.long)
    tmask = torch.zeros(B, T)
    for b, (r, p) in enumerate(rows):
        n = len(r)
        ids[b, :n] = torch.tensor(r)
        mask[b, :n] = 1
        targets[b, : n - 1] = torch.tensor(r[1:])
        tmask[b, p - 1 : n - 1] = 1
    return ids, mask, targets, tmask


def seq_logps(model, batch):
    ids, mask, targets, tmask = batch
    logits = model(input_ids=ids, attention_mask=mask).logits
    lp = torch.gather(F.log_softmax(logits, -1), -1, targets.unsqueeze(-1)).squeeze(-1)
    return (lp * tmask).sum(-1)


def pair_batch(pairs, pad_id):
    """Chosen rows then rejected rows, as alignd's feeds."""
    rows = [(p["prompt"] + p["chosen"], len(p["prompt"])) for p in pairs] + [(p["prompt"] + p["rejected"], len(p["prompt"])) for p in pairs]
    return pad_rows(rows, pad_id)


def real_tokens(pairs):
    return sum(2 * len(p["prompt"]) + len(p["chosen"]) + len(p["rejected"]) for p in pairs)


def peft_model(model_dir, w):
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    cfg = LoraConfig(r=w["lora"]["r"], lora_alpha=w["lora"]["alpha"], target_modules=w["lora"]["target_modules"], lora_dropout=0.0)
    model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(2)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data = (torch.rand(p.shape, generator=g) * 0.02 - 0.01)
    return model


def micro_batches(pairs, k):
    return [pairs[i : i + k] for i in range(0, len(pairs), k)]


def dpo_step_fn(model, micro, refs, w, opt, params):
    def step():
        opt.zero_grad(set_to_none=True)
        for batch, (rc, rr) in zip(micro, refs):
            lp = seq_logps(model, batch)
            P = rc.shape[0]
            logits = w["beta"] * ((lp[:P] - rc) - (lp[P:] - rr))
            loss = -F.logsigmoid(logits).mean() / len(micro)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, w["max_grad_norm"])
        opt.step()

    return step


def reference(model, micro):
    with torch.no_grad(), model.disable_adapter():
        out = []
        for batch in micro:
            lp = seq_logps(model, batch)
            P = lp.shape[0] // 2
            out.append((lp[:P], lp[P:]))
        return out


def fixed_pairs(w, vocab):
    f = w["fixed"]
    g = torch.Generator().manual_seed(7)
    rand = lambda n: torch.randint(0, vocab, (n,), generator=g).tolist()
    return [{"prompt": rand(f["prompt"]), "chosen": rand(f["length"] - f["prompt"]), "rejected": rand(f["length"] - f["prompt"])} for _ in range(f["pairs"])]


def run_peft(model_dir, w, iters, emit):
    model = peft_model(model_dir, w)
    model.train()
    vocab = model.config.vocab_size
    pad = w["realistic"]["pad_id"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=w["lr"], weight_decay=0.0)
    engine = "pytorch+peft (sdpa)"

    fixed = fixed_pairs(w, vocab)
    fb = [pair_batch(fixed, pad)]
    step_ms = timed(dpo_step_fn(model, fb, reference(model, fb), w, opt, params), max(iters, 3))
    with torch.no_grad():
        fwd_ms = timed(lambda: seq_logps(model, fb[0]), max(iters, 3))
    n = real_tokens(fixed)
    emit({"engine": engine, "config": "fixed", "tokens": n, "step_ms": round(step_ms, 1), "tokens_per_s": round(n / step_ms * 1000, 1), "step_over_forward": round(step_ms / fwd_ms, 3)})
    emit({"engine": engine, "config": "logprobs", "tokens": n, "forward_ms": round(fwd_ms, 1), "tokens_per_s": round(n / fwd_ms * 1000, 1)})

    pairs = w["realistic"]["pairs"]
    rb = [pair_batch(mb, pad) for mb in micro_batches(pairs, w["realistic"]["micro_pairs"])]
    ref = reference(model, rb)
    # The same model and data on both sides: alignd's reference log-probs (base model) against ours.
    ours = [x for rc, rr in ref for x in rc.tolist() + rr.tolist()]
    theirs = [x for mb in micro_batches(w["realistic"]["ref_logps"], w["realistic"]["micro_pairs"]) for x in [c for c, _ in mb] + [r for _, r in mb]]
    emit({"engine": engine, "config": "check", "reference_logps_max_abs_diff": max(abs(a - b) for a, b in zip(ours, theirs)), "rows": len(ours)})
    step_ms = timed(dpo_step_fn(model, rb, ref, w, opt, params), iters)
    with torch.no_grad():
        fwd_ms = timed(lambda: [seq_logps(model, b) for b in rb], iters)
    n = real_tokens(pairs)
    emit({"engine": engine, "config": "realistic", "tokens": n, "step_ms": round(step_ms), "forward_ms": round(fwd_ms), "tokens_per_s": round(n / step_ms * 1000, 1),
          "forward_tokens_per_s": round(n / fwd_ms * 1000, 1), "step_over_forward": round(step_ms / fwd_ms, 3)})

    G = w["generation"]
    prompts = G["prompts"]
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), L, dtype=torch.long)
    for b, p in enumerate(prompts):  # left padding, as HF generation wants
        ids[b, L - len(p) :] = torch.tensor(p)
        mask[b, L - len(p) :] = 1
    model.eval()
    with torch.no_grad():
        gen = lambda: model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=G["newTokens"], min_new_tokens=G["newTokens"], do_sample=True,
                                     temperature=G["temperature"], top_p=G["topP"], top_k=0, pad_token_id=pad)
        gen_ms = timed(gen, max(iters, 3))
    n = len(prompts) * G["newTokens"]
    emit({"engine": engine, "config": "generation", "tokens": n, "ms": round(gen_ms, 1), "tokens_per_s": round(n / gen_ms * 1000, 1)})


def run_trl(model_dir, w, iters, emit, name, pairs, micro):
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    model = peft_model(model_dir, w)
    tok = AutoTokenizer.from_pretrained(model_dir)
    pad = w["realistic"]["pad_id"]
    if tok.pad_token is None or tok.pad_token_id != pad:
        tok.pad_token = tok.convert_ids_to_tokens(pad)
    # Reference log-probs cached before training (alignd's round caches them once per round).
    refs = []
    for mb, (rc, rr) in zip(micro_batches(pairs, micro), reference(model, [pair_batch(mb, pad) for mb in micro_batches(pairs, micro)])):
        refs += list(zip(rc.tolist(), rr.tolist()))
    rows = [{"prompt_ids": p["prompt"], "chosen_ids": p["chosen"], "rejected_ids": p["rejected"], "ref_chosen_logps": rc, "ref_rejected_logps": rr}
            for p, (rc, rr) in zip(pairs, refs)]

    class Pretokenized(DPOTrainer):
        """The rows are already token ids, as the tokenizing map would leave them; the sampler keeps alignd's order."""

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

        def _precompute_ref_logps(self, dataset, *args, **kwargs):
            return dataset

        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    ends = []

    class StepTimes(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out, per_device_train_batch_size=micro, gradient_accumulation_steps=max(1, len(pairs) // micro), max_steps=1 + iters,
            learning_rate=w["lr"], lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=w["max_grad_norm"], beta=w["beta"], loss_type=["sigmoid"],
            bf16=False, gradient_checkpointing=False, max_length=None, precompute_ref_log_probs=True, use_cpu=True, report_to="none",
            save_strategy="no", logging_steps=10_000, dataloader_num_workers=0, disable_tqdm=True, seed=0,
        )
        trainer = Pretokenized(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(rows), callbacks=[StepTimes()])
        # The Trainer prints its final metrics (a Python dict) on stdout, which carries only JSON lines.
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
    step_ms = statistics.median([(b - a) * 1000 for a, b in zip(ends[1:-1], ends[2:])])
    n = real_tokens(pairs)
    emit({"engine": "trl DPOTrainer", "config": name, "tokens": n, "step_ms": round(step_ms, 1), "tokens_per_s": round(n / step_ms * 1000, 1)})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--no-trl", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    with open(f"{a.dir}/workload.json") as f:
        w = json.load(f)
    model_dir = f"{a.dir}/model"
    emit = lambda d: print(json.dumps({"threads": a.threads, "torch": torch.__version__, **d}), flush=True)
    run_peft(model_dir, w, a.iters, emit)
    if not a.no_trl:
        run_trl(model_dir, w, a.iters, emit, "realistic", w["realistic"]["pairs"], w["realistic"]["micro_pairs"])
        vocab = AutoModelForCausalLM.from_pretrained(model_dir).config.vocab_size
        run_trl(model_dir, w, max(a.iters, 3), emit, "fixed", fixed_pairs(w, vocab), w["fixed"]["pairs"])


if __name__ == "__main__":
    main()
