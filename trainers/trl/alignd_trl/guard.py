"""alignd's KL guard as a TRL (transformers) callback: exact token KL on held-out contexts every
`check_steps` optimizer steps against the reference (the deployed adapter: per-round budget) and
the anchor (cumulative budget); over budget, the adapter rolls back to the last in-budget state and
training stops. The same rules as the local engine (daemon/align/train-round.ts): a check after the
last step too, and a stop while still in budget when the next check would cross at the last pace.
Adaptive β (Ziegler et al. 2019, arXiv:1909.08593 §2.2): β ← β·(1 + k_β·clip(KL/target − 1, ±0.2))."""
import math

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from transformers import TrainerCallback

from .tokens import token_kl

POLICY = "default"  # TRL 1.16's name for the trained adapter; its reference copy is "ref"


def adapter_finite(model) -> bool:
    return all(torch.isfinite(p).all() for n, p in model.named_parameters() if f".{POLICY}." in n)


class KlGuard(TrainerCallback):
    def __init__(self, model, contexts, pad_id, kl: dict, ref: str | None, anchor: str | None):
        self.model = model
        self.contexts = contexts
        self.pad_id = pad_id
        self.every = kl["check_steps"]
        self.budget_round = kl["per_round"]
        self.budget_cumulative = kl["cumulative"]
        ab = kl["adaptive_beta"]
        self.adaptive = ab if ab["enabled"] else None
        self.ref = ref
        self.anchor = anchor
        self.trainer = None  # set after the trainer exists (adaptive β writes trainer.beta)
        self.checks: list[dict] = []
        self.kept_step = 0
        self.stop_reason = "completed"
        self.reason = None
        self.kl = {"perRound": 0.0, "cumulative": 0.0}
        self.beta = None
        self.snapshot = None
        self.last = (0.0, 0.0)

    def measure(self) -> tuple[float, float]:
        r = token_kl(self.model, self.contexts, POLICY, self.ref, self.pad_id)
        c = token_kl(self.model, self.contexts, POLICY, self.anchor, self.pad_id)
        return r, c

    def _keep(self):
        self.snapshot = {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model, adapter_name=POLICY).items()}

    def start(self, beta: float) -> bool:
        """The step-0 check; False when the deployed version already spent the cumulative budget."""
        self.beta = beta
        r, c = self.measure()
        self.checks.append({"step": 0, "perRound": r, "cumulative": c, "beta": beta})
        self.kl = {"perRound": r, "cumulative": c}
        self.last = (r, c)
        self._keep()
        if c >= self.budget_cumulative:
            self.stop_reason = "kl_budget_exhausted"
            self.reason = f"the deployed version is already {c:.4f} nats/token from the anchor (cumulative budget {self.budget_cumulative}); nothing trained"
            return False
        return True

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        last = step >= state.max_steps
        if step % self.every != 0 and not last:
            return control
        if not adapter_finite(self.model):
            self.stop_reason, self.reason, self.kept_step = "diverged", f"adapter values are not finite after step {step}", 0
            control.should_training_stop = True
            return control
        r, c = self.measure()
        if not (math.isfinite(r) and math.isfinite(c)):
            self.stop_reason, self.reason, self.kept_step = "diverged", f"KL is not finite after step {step}", 0
            control.should_training_stop = True
            return control
        self.checks.append({"step": step, "perRound": r, "cumulative": c, "beta": self.beta})
        if r > self.budget_round or c > self.budget_cumulative:
            set_peft_model_state_dict(self.model, self.snapshot, adapter_name=POLICY)
            self.stop_reason = "kl_budget"
            self.reason = (f"KL {r:.4f} (round) / {c:.4f} (cumulative) nats/token after step {step} exceeds the budget "
                           f"{self.budget_round} / {self.budget_cumulative}; kept step {self.kept_step}")
            control.should_training_stop = True
            return control
        self._keep()
        self.kept_step = step
        self.kl = {"perRound": r, "cumulative": c}
        lr, lc = self.last
        if not last and (2 * r - lr > self.budget_round or 2 * c - lc > self.budget_cumulative):
            self.stop_reason = "kl_budget"
            self.reason = f"KL {r:.4f} / {c:.4f} nats/token after step {step}; at this pace the next {self.every} step(s) would exceed the budget"
            control.should_training_stop = True
            return control
        self.last = (r, c)
        if self.adaptive is not None and self.trainer is not None:
            ab = self.adaptive
            err = max(-0.2, min(0.2, r / ab["target"] - 1))
            self.beta = min(ab["max_beta"], max(ab["min_beta"], self.beta * (1 + ab["k_beta"] * err)))
            self.trainer.beta = self.beta  # DPOTrainer/KTOTrainer read self.beta in every loss
        return control
