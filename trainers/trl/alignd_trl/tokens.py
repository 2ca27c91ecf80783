"""Token ids and per-token log-probabilities, computed the way alignd's local engine does
(daemon/model/tokenizer.ts promptResponse, daemon/align/kl.ts): the prompt rendered by the chat
template with the generation prompt, the response tokenized on its own and closed by the eos
token, sequences longer than max_length losing prompt tokens first."""
import contextlib

import torch
import torch.nn.functional as F
from trl.trainer.utils import use_adapter


def messages_of(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def _ids(x) -> list[int]:
    if isinstance(x, dict) or hasattr(x, "keys"):
        x = x["input_ids"]
    return list(x)


def prompt_response_ids(tokenizer, prompt, response: str, max_length: int) -> tuple[list[int], int]:
    if tokenizer.chat_template is not None:
        p = _ids(tokenizer.apply_chat_template(messages_of(prompt), add_generation_prompt=True, tokenize=True))
    else:
        p = _ids(tokenizer(prompt if isinstance(prompt, str) else prompt[-1]["content"]))
    r = _ids(tokenizer(response, add_special_tokens=False))
    if tokenizer.eos_token_id is not None:
        r.append(tokenizer.eos_token_id)
    ids = p + r
    cut = max(0, len(ids) - max_length)
    return ids[cut:], max(0, len(p) - cut)


def _batch(seqs, pad_id):
    width = max(len(ids) for ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    # response[b, t] = 1 where position t predicts a response token (t + 1 ≥ prompt length)
    response = torch.zeros((len(seqs), width - 1), dtype=torch.bool)
    for b, (ids, plen) in enumerate(seqs):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        attention[b, : len(ids)] = 1
        response[b, max(plen, 1) - 1 : len(ids) - 1] = True
    return input_ids, attention, response


@contextlib.contextmanager
def _eval_mode(model):
    """Evaluation mode (no dropout) for a measurement taken mid-training; the mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _logps(model, adapter, input_ids, attention):
    with use_adapter(model, adapter_name=adapter):
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1, :].float()
    return F.log_softmax(logits, dim=-1)


@torch.no_grad()
def token_kl(model, seqs, policy: str | None, ref: str | None, pad_id: int, chunk: int = 8) -> float:
    """Mean exact KL(π_policy‖π_ref) = Σ_v π(v)(log π(v) − log π_ref(v)) over response positions (nats/token)."""
    if not seqs:
        return 0.0
    total, count = 0.0, 0
    with _eval_mode(model):
        for i in range(0, len(seqs), chunk):
            input_ids, attention, response = _batch(seqs[i : i + chunk], pad_id)
            lp = _logps(model, policy, input_ids, attention)
            lq = _logps(model, ref, input_ids, attention)
            kl = (lp.exp() * (lp - lq)).sum(-1)
            total += float(kl[response].sum())
            count += int(response.sum())
    return total / count if count else 0.0


@torch.no_grad()
def sequence_logps(model, seqs, adapter: str | None, pad_id: int, chunk: int = 8) -> list[float]:
    """Σ log π(response token) per sequence."""
    out: list[float] = []
    with _eval_mode(model):
        for i in range(0, len(seqs), chunk):
            input_ids, attention, response = _batch(seqs[i : i + chunk], pad_id)
            lp = _logps(model, adapter, input_ids, attention)
            tok = lp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            out.extend(float(x) for x in (tok * response).sum(-1))
    return out
