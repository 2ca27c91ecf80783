"""One alignd round on TRL: read the job alignd exported, train the deployed adapter further with
TRL's DPOTrainer (or KTOTrainer) under alignd's KL guard, and write out/adapter (PEFT) and
out/metrics.json (alignd.trl-metrics/v1, names as the local engine's round metrics).

Knobs, one to one from the policy schema (daemon/policy/schema.ts) to TRL 1.16's configs:
  objective.loss_type → loss_type (kto → KTOTrainer)   objective.beta → beta
  objective.label_smoothing → label_smoothing          objective.rpo_alpha → loss_type += ["sft"], loss_weights [1, rpo_alpha]
  objective.learning_rate → learning_rate              objective.lr_scheduler_type → lr_scheduler_type
  objective.warmup_ratio → warmup_steps (transformers 5: a value < 1 is the share of the round's steps)
  objective.max_steps → max_steps (unset: -1)
  objective.num_epochs → num_train_epochs              objective.micro_batch_size → per_device_train_batch_size
  objective.batch_size → gradient_accumulation_steps = batch_size / micro_batch_size
  objective.max_grad_norm → max_grad_norm              objective.weight_decay → weight_decay
  objective.max_length → max_length (truncation_mode keep_end: prompt tokens go first, as in alignd)
  objective.kto.{desirable,undesirable}_weight → KTOConfig's
  lora.{r, alpha, dropout, target_modules, use_rslora} → LoraConfig (first round only; later rounds load the deployed adapter)
  kl.* → the KlGuard callback (guard.py)
The reference is the deployed adapter: loaded as TRL's trained adapter "default", TRL copies it to
"ref" on the same base (TRL 1.16 dpo_trainer/kto_trainer: `model.add_adapter("ref", ...)`); with no
deployed adapter the reference is the base (adapters disabled), as in alignd's first round."""
import math
import os
import sys
import time

from .job import METRICS_FORMAT, JobError, read_job, read_rows, sha256_file, write_json_atomic


def run(job_path: str) -> int:
    t0 = time.time()
    try:
        job, job_dir = read_job(job_path)
    except JobError as e:
        print(f"alignd_trl: refused: {e}", file=sys.stderr)
        return 2
    out_dir = os.path.join(job_dir, job["output"])
    os.makedirs(out_dir, exist_ok=True)

    import peft
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from .guard import POLICY, KlGuard, adapter_finite
    from .tokens import messages_of, prompt_response_ids, sequence_logps

    o, kl, lora = job["objective"], job["kl"], job["lora"]
    is_kto = o["loss_type"] == "kto"
    set_seed(job["seed"])
    window = read_rows(os.path.join(job_dir, job["window"]))
    heldout = read_rows(os.path.join(job_dir, job["heldout"]))
    metrics = {
        "format": METRICS_FORMAT, "loss": None, "steps": 0, "kept_step": 0, "stop_reason": "completed", "reason": None,
        "beta": o["beta"], "kl": {"perRound": 0.0, "cumulative": 0.0, "sampledSequence": None}, "kl_checks": [],
        "heldout": None, "examples": 0, "adapter_files": {}, "step_logs": [],
        "versions": {"trl": trl.__version__, "peft": peft.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
        "wall_s": {},
    }
    metrics_path = os.path.join(out_dir, "metrics.json")

    tokenizer = AutoTokenizer.from_pretrained(job["base_model"])
    chat = tokenizer.chat_template is not None

    def as_prompt(p):
        return messages_of(p) if chat else (p if isinstance(p, str) else p[-1]["content"])

    def as_completion(text):
        return [{"role": "assistant", "content": text}] if chat else text

    if is_kto:
        rows = [r for r in window if r["type"] == "kto" and r["response"] is not None and r["label"] in ("up", "down")]
        data = [{"prompt": as_prompt(r["prompt"]), "completion": as_completion(r["response"]), "label": r["label"] == "up"} for r in rows]
    else:
        rows = [r for r in window if r["type"] == "pair" and r["chosen"] is not None and r["rejected"] is not None]
        data = [{"prompt": as_prompt(r["prompt"]), "chosen": as_completion(r["chosen"]), "rejected": as_completion(r["rejected"])} for r in rows]
    metrics["examples"] = len(data)
    if not data:
        metrics.update(stop_reason="no_data", reason=f"no {'KTO rows' if is_kto else 'pairs'} in the window")
        write_json_atomic(metrics_path, metrics)
        return 0

    # Held-out contexts for the guard (training rows only when nothing is held out, as alignd does).
    source = heldout if heldout else window
    contexts = []
    for r in source:
        resp = r["chosen"] if r["chosen"] is not None else r["response"]
        if resp is not None and len(contexts) < kl["check_contexts"]:
            contexts.append(prompt_response_ids(tokenizer, r["prompt"], resp, o["max_length"]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    base = AutoModelForCausalLM.from_pretrained(job["base_model"], dtype=torch.float32)
    peft_config = None
    if job["deployed_adapter"] is not None:
        model = PeftModel.from_pretrained(base, os.path.join(job_dir, job["deployed_adapter"]), adapter_name=POLICY, is_trainable=True)
    else:
        model = base
        peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], target_modules=list(lora["target_modules"]),
                                 use_rslora=lora["use_rslora"], bias="none", task_type="CAUSAL_LM")
    metrics["wall_s"]["load"] = round(time.time() - t0, 3)

    common = dict(
        output_dir=os.path.join(job_dir, "trainer-state"), learning_rate=o["learning_rate"], lr_scheduler_type=o["lr_scheduler_type"],
        warmup_steps=o["warmup_ratio"], max_steps=o["max_steps"] if o["max_steps"] is not None else -1, num_train_epochs=o["num_epochs"],
        per_device_train_batch_size=o["micro_batch_size"], gradient_accumulation_steps=o["batch_size"] // o["micro_batch_size"],
        max_grad_norm=o["max_grad_norm"], weight_decay=o["weight_decay"], max_length=o["max_length"], beta=o["beta"], seed=job["seed"],
        logging_steps=1, save_strategy="no", report_to=[], disable_dropout=False, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    if is_kto:
        config = trl.KTOConfig(**common, desirable_weight=o["kto"]["desirable_weight"], undesirable_weight=o["kto"]["undesirable_weight"])
        Trainer = trl.KTOTrainer
    else:
        losses = [o["loss_type"]] + (["sft"] if o["rpo_alpha"] else [])
        weights = [1.0, float(o["rpo_alpha"])] if o["rpo_alpha"] else None
        config = trl.DPOConfig(**common, loss_type=losses, loss_weights=weights, label_smoothing=o["label_smoothing"], truncation_mode="keep_end")
        Trainer = trl.DPOTrainer

    trainer = Trainer(model=model, ref_model=None, args=config, train_dataset=Dataset.from_list(data), processing_class=tokenizer,
                      **({} if peft_config is None else {"peft_config": peft_config}))
    model = trainer.model
    ref = "ref" if "ref" in model.peft_config else None
    anchor = None
    if job["anchor_adapter"] is not None:
        model.load_adapter(os.path.join(job_dir, job["anchor_adapter"]), adapter_name="anchor", is_trainable=False)
        anchor = "anchor"
    model.set_adapter(POLICY)  # trainable again after load_adapter
    guard = KlGuard(model, contexts, pad_id, kl, ref, anchor)
    guard.trainer = trainer
    trainer.add_callback(guard)

    t1 = time.time()
    if guard.start(o["beta"]):
        trainer.train()
    metrics["wall_s"]["train"] = round(time.time() - t1, 3)

    logs = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
    metrics["step_logs"] = [{"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate", 0.0), "grad_norm": h.get("grad_norm", 0.0),
                             "beta": guard.beta} for h in logs if all(math.isfinite(h.get(k, 0.0)) for k in ("loss", "learning_rate", "grad_norm"))]
    metrics.update(steps=trainer.state.global_step, kept_step=guard.kept_step, stop_reason=guard.stop_reason, reason=guard.reason,
                   kl_checks=guard.checks, beta=guard.beta)
    metrics["kl"].update(guard.kl)
    metrics["loss"] = logs[-1]["loss"] if logs and math.isfinite(logs[-1]["loss"]) else None
    if guard.kept_step > 0 and not adapter_finite(model):
        metrics.update(stop_reason="diverged", reason="candidate adapter values are not finite", kept_step=0)

    if metrics["kept_step"] > 0:
        t2 = time.time()
        held = [r for r in heldout if r["type"] == "pair" and r["chosen"] is not None and r["rejected"] is not None]
        if held:
            seqs = [s for r in held for s in (prompt_response_ids(tokenizer, r["prompt"], r["chosen"], o["max_length"]),
                                              prompt_response_ids(tokenizer, r["prompt"], r["rejected"], o["max_length"]))]
            pol = sequence_logps(model, seqs, POLICY, pad_id)
            refl = sequence_logps(model, seqs, ref, pad_id)
            d = [(pol[2 * i] - refl[2 * i]) - (pol[2 * i + 1] - refl[2 * i + 1]) for i in range(len(held))]
            metrics["heldout"] = {"pairs": len(held), "rewards/accuracies": sum(x > 0 for x in d) / len(d),
                                  "rewards/margins": sum(o["beta"] * x for x in d) / len(d)}
        adapter_dir = os.path.join(out_dir, "adapter")
        model.peft_config[POLICY].base_model_name_or_path = job["base_model_name_or_path"]
        model.save_pretrained(adapter_dir, selected_adapters=[POLICY])
        metrics["adapter_files"] = {f: sha256_file(os.path.join(adapter_dir, f)) for f in ("adapter_config.json", "adapter_model.safetensors")}
        metrics["wall_s"]["save"] = round(time.time() - t2, 3)
    metrics["wall_s"]["total"] = round(time.time() - t0, 3)
    write_json_atomic(metrics_path, metrics)
    print(f"alignd_trl: round {job['round']} of {job['model']}: {metrics['stop_reason']}, steps {metrics['steps']}, kept {metrics['kept_step']}, "
          f"KL {metrics['kl']['perRound']:.4f}/{metrics['kl']['cumulative']:.4f}", flush=True)
    return 0
