"""Parity fixtures for alignd's model code, made with the real implementations.

Phase `base`  (before alignd runs): for each architecture, a tiny random-initialised checkpoint
              (transformers), a PEFT LoRA adapter with non-zero B, and reference logits and
              response log-probs with and without the adapter for a few fixed token sequences.
Phase `check` (after tools/parity/write-alignd.mjs ran): load the adapters alignd wrote into PEFT
              and record their logits; record the tiny built-in model's chat-template rendering,
              token ids and logits as transformers computes them.

Outputs go to test/fixtures/parity/ (small: tiny dims, float32 logits in safetensors).
Run everything with tools/parity/run.sh (see README.md).
"""

import json
import os
import sys
from pathlib import Path

import torch
import transformers
import peft
import safetensors
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config)
from peft import LoraConfig, PeftModel, get_peft_model

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test" / "fixtures" / "parity"
WORK = ROOT / ".cache" / "parity"

VOCAB = 64
# Fixed token sequences and how many of their first tokens are the prompt.
SEQUENCES = [
    ([1, 5, 9, 23, 42, 17, 3, 60, 11, 7], 4),
    ([2, 33, 33, 8, 51, 0, 63, 12, 19, 27, 44, 6, 38, 21, 14, 30], 6),
    ([7, 62, 4, 4, 59], 2),
]


def arch_configs():
    """name → (config, lora targets, use_rslora, save dtype, max shard size)."""
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=None)
    llama_like = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, **common)
    return {
        # untied embeddings, all seven targets, sharded save
        "llama": (LlamaConfig(**llama_like, tie_word_embeddings=False, rope_theta=500.0),
                  ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], False, torch.float32, "8KB"),
        # llama3 rope scaling with a medium-frequency band at head_dim 8, tied embeddings, F16 weights
        "llama3": (LlamaConfig(**{**llama_like, "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128}, head_dim=8,
                               tie_word_embeddings=True,
                               rope_scaling={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
                   ["q_proj", "v_proj"], False, torch.float16, None),
        # sliding window shorter than the longest sequence
        "mistral": (MistralConfig(**llama_like, sliding_window=6, tie_word_embeddings=False),
                    ["q_proj", "o_proj", "down_proj"], False, torch.float32, None),
        # q/k/v biases, rsLoRA, BF16 weights
        "qwen2": (Qwen2Config(**llama_like, tie_word_embeddings=True, use_sliding_window=False),
                  ["q_proj", "k_proj", "v_proj", "up_proj"], True, torch.bfloat16, None),
        "gpt2": (GPT2Config(vocab_size=VOCAB, n_embd=16, n_head=4, n_layer=2, n_positions=32, bos_token_id=1, eos_token_id=2),
                 ["c_attn", "c_proj", "c_fc"], False, torch.float32, None),
    }


def big_init(model, gen):
    """Re-initialise so logits and LoRA effects are far above float32 noise (defaults are ~0.02)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or ".ln_" in name and name.endswith("weight") or name.endswith("ln_f.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "embed" in name or "wte" in name or "wpe" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[0] if "transformer.h." in name else p.shape[1]  # Conv1D stores [in, out]
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def response_logprobs(logits, ids, prompt_len):
    lp = torch.log_softmax(logits.double(), dim=-1)
    per = [lp[t - 1, ids[t]].item() for t in range(prompt_len, len(ids))]
    return per, sum(per)


def load_base(arch_dir):
    return AutoModelForCausalLM.from_pretrained(arch_dir, dtype=torch.float32, attn_implementation="eager").eval()


GEN_TOKENS = 6
EOS = 2


def greedy(model, prompt):
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=GEN_TOKENS, do_sample=False, eos_token_id=EOS, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def final_hidden(model, ids):
    """Hidden states after the final norm (what reward and safety heads read)."""
    with torch.no_grad():
        return getattr(model, model.base_model_prefix)(torch.tensor([ids])).last_hidden_state[0].float()


def record(model, tensors, meta, suffix, base=None):
    for i, (ids, plen) in enumerate(SEQUENCES):
        lg = logits_of(model, ids)
        tensors[f"seq{i}.logits{suffix}"] = lg.contiguous()
        per, total = response_logprobs(lg, ids, plen)
        meta["sequences"][i][f"logprobs{suffix}"] = per
        meta["sequences"][i][f"logprob_sum{suffix}"] = total
        # Greedy continuation of the prompt (KV-cache generation in transformers), stop at eos.
        meta["sequences"][i][f"greedy{suffix}"] = greedy(model, ids[:plen])
        if base is not None:
            tensors[f"seq{i}.hidden"] = final_hidden(base, ids).contiguous()


def phase_base():
    os.chdir(OUT)  # relative base_model_name_or_path in the adapters
    for name, (config, targets, rslora, save_dtype, shard) in arch_configs().items():
        gen = torch.Generator().manual_seed(1234)
        torch.manual_seed(1234)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        big_init(model, gen)
        model_dir = Path(name) / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        kwargs = {"max_shard_size": shard} if shard else {}
        model.to(save_dtype).save_pretrained(model_dir, **kwargs)
        (model_dir / "generation_config.json").unlink(missing_ok=True)

        base = load_base(str(model_dir))
        meta = {"arch": name, "save_dtype": str(save_dtype), "sequences": [{"ids": ids, "prompt_length": p} for ids, p in SEQUENCES]}
        tensors = {}
        record(base, tensors, meta, "", base=base)

        lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.05, target_modules=targets, use_rslora=rslora, task_type="CAUSAL_LM")
        pm = get_peft_model(load_base(str(model_dir)), lcfg)
        with torch.no_grad():
            for pname, p in pm.named_parameters():
                if "lora_A" in pname:
                    p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
                elif "lora_B" in pname:
                    p.copy_(0.5 * torch.randn(p.shape, generator=gen))  # non-zero B: the adapter changes logits
        pm.eval()
        pm.save_pretrained(Path(name) / "adapter")
        (Path(name) / "adapter" / "README.md").unlink(missing_ok=True)
        record(pm, tensors, meta, "_lora")
        save_file(tensors, str(Path(name) / "reference.safetensors"), metadata={"format": "pt"})
        (Path(name) / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")
        print(f"{name}: model, adapter, reference written")

    # A safetensors file with mixed dtypes and metadata, for the byte-exact round trip.
    gen = torch.Generator().manual_seed(7)
    mixed = {
        "w.f32": torch.randn(3, 5, generator=gen),
        "w.f16": torch.randn(4, 3, generator=gen).half(),
        "w.bf16": torch.randn(2, 7, generator=gen).bfloat16(),
        "w.f64": torch.randn(3, generator=gen).double(),
        "ids.i64": torch.tensor([0, -1, 2 ** 40, 7], dtype=torch.int64),
        "ids.i32": torch.tensor([[1, -2], [3, 4]], dtype=torch.int32),
        "mask.bool": torch.tensor([True, False, True]),
        "bytes.u8": torch.tensor([0, 255, 17], dtype=torch.uint8),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(3.5),
    }
    save_file(mixed, "mixed.safetensors", metadata={"format": "pt", "note": "alignd parity", "a": "1"})
    meta = {k: {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.double().flatten().tolist()} for k, v in mixed.items()}
    Path("mixed.json").write_text(json.dumps(meta, indent=1) + "\n")


def phase_check():
    os.chdir(OUT)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                "safetensors": safetensors.__version__}
    report = {"versions": versions, "archs": {}}
    for name in arch_configs():
        adapter_dir = Path(name) / "alignd-adapter"
        if not adapter_dir.exists():
            sys.exit(f"{adapter_dir} missing: run tools/parity/write-alignd.mjs first")
        base = load_base(str(Path(name) / "model"))
        # LoraConfig parses adapter_config.json strictly (unknown fields warn, wrong types fail).
        lcfg = LoraConfig.from_pretrained(str(adapter_dir))
        pm = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        # Every key alignd wrote must land in a LoRA parameter; PEFT reports what it could not load.
        sd = safetensors.torch.load_file(str(adapter_dir / "adapter_model.safetensors"))
        loaded = peft.utils.set_peft_model_state_dict(pm, sd, adapter_name="default")
        unexpected = list(getattr(loaded, "unexpected_keys", []))
        missing_lora = [k for k in getattr(loaded, "missing_keys", []) if "lora_" in k]
        tensors = {}
        meta = {"sequences": [{"ids": ids, "prompt_length": p} for ids, p in SEQUENCES]}
        record(pm, tensors, meta, "_alignd")
        save_file(tensors, str(Path(name) / "alignd-reference.safetensors"), metadata={"format": "pt"})
        report["archs"][name] = {
            "loaded_in_peft": True, "r": lcfg.r, "lora_alpha": lcfg.lora_alpha, "use_rslora": lcfg.use_rslora,
            "fan_in_fan_out": lcfg.fan_in_fan_out, "target_modules": sorted(lcfg.target_modules),
            "unexpected_keys": unexpected, "missing_lora_keys": missing_lora,
            "logprob_sums": [s["logprob_sum_alignd"] for s in meta["sequences"]],
        }
        print(f"{name}: alignd adapter loads in PEFT ({len(sd)} tensors, unexpected {unexpected}, missing {missing_lora})")
    Path("alignd-adapters-in-peft.json").write_text(json.dumps(report, indent=1) + "\n")

    # The tiny built-in model, written by alignd, read by transformers.
    tiny_dir = WORK / "tiny"
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    conversations = [
        [{"role": "user", "content": "Hello there, how are you?"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
         {"role": "assistant", "content": "4."}, {"role": "user", "content": "And 3+3?"}],
        [{"role": "user", "content": "Grüße aus Köln, 東京 too! 🙂  two  spaces\n\tand a tab"}],
    ]
    chats = []
    for msgs in conversations:
        for gen_prompt in (True, False):
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen_prompt)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            chats.append({"messages": msgs, "add_generation_prompt": gen_prompt, "text": text, "ids": ids})
    # A multi-line template of the kind real models ship, rendered by transformers (jinja2 with
    # trim_blocks/lstrip_blocks) for the same conversations; one conversation it must refuse.
    multiline = (Path(__file__).parent / "templates" / "multiline.jinja").read_text()
    renders = []
    for msgs in conversations + [[{"role": "user", "content": "  padded system-less  "}, {"role": "assistant", "content": "ok"}]]:
        for gen_prompt in (True, False):
            renders.append({"messages": msgs, "add_generation_prompt": gen_prompt,
                            "text": tok.apply_chat_template(msgs, chat_template=multiline, tokenize=False, add_generation_prompt=gen_prompt)})
    refused = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]
    try:
        tok.apply_chat_template(refused, chat_template=multiline, tokenize=False)
        sys.exit("the multi-line template should refuse a tool message")
    except Exception as err:  # jinja2 TemplateError from raise_exception
        refusal = str(err)
    Path("chat-templates.json").write_text(json.dumps({"multiline": {"renders": renders, "refused": refused, "refusal": refusal}},
                                                      indent=1, ensure_ascii=False) + "\n")
    texts = ["The assistant answers the question.", "  leading spaces and 12345 digits", "ünïcödé ✓", "don't won't it's"]
    encodes = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in texts]
    for e in encodes:
        e["decoded"] = tok.decode(e["ids"])
    # A prompt/response pair as alignd splits it: prompt rendered with the generation prompt,
    # response tokenized on its own and closed with eos.
    prompt = [{"role": "user", "content": "How many days are there in a week?"}]
    response = "There are seven days in a week."
    p_ids = tok(tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    model = load_base(str(tiny_dir))
    ids = p_ids + r_ids
    lg = logits_of(model, ids)
    per, total = response_logprobs(lg, ids, len(p_ids))
    save_file({"logits": lg.contiguous()}, "tiny-reference.safetensors", metadata={"format": "pt"})
    tiny = {
        "special": {"bos": [tok.bos_token, tok.bos_token_id], "eos": [tok.eos_token, tok.eos_token_id], "pad": [tok.pad_token, tok.pad_token_id]},
        "vocab_size": len(tok), "chats": chats, "encodes": encodes,
        "pair": {"prompt": prompt, "response": response, "ids": ids, "prompt_length": len(p_ids), "logprobs": per, "logprob_sum": total},
    }
    # Sampling warpers as generate() applies them: temperature, then top-p.
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper
    wgen = torch.Generator().manual_seed(3)
    warps = []
    for temperature, top_p in [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5), (1.0, 0.2), (0.5, 0.95)]:
        scores = 0.7 * torch.randn(1, 24, generator=wgen, dtype=torch.float64)
        warped = TemperatureLogitsWarper(temperature)(None, scores.clone())
        if top_p < 1.0:
            warped = TopPLogitsWarper(top_p)(None, warped)
        warps.append({"temperature": temperature, "top_p": top_p, "logits": scores[0].tolist(),
                      "probs": torch.softmax(warped, dim=-1)[0].tolist()})
    Path("sampling.json").write_text(json.dumps(warps, indent=1) + "\n")
    Path("tiny-tokenizer.json").write_text(json.dumps(tiny, indent=1, ensure_ascii=False) + "\n")
    print("tiny: tokenizer records and logits written")


TOKENIZER_CORPUS = [
    "The assistant answered the question, and the user said thanks.",
    "Numbers like 12345, 3.14159 and 2026 appear; so do URLs such as example.org/path?q=1.",
    "It's, we're, they'll, I'd, you've, SHE'S, don't: contractions in both cases.",
    "Tabs\tand\nnewlines\r\nand   runs of   spaces matter to tokenizers.",
    "Grüße aus Köln, café naïve, 東京 and emoji 🙂 are rarer.",
]
TOKENIZER_PROBES = [
    "Hello world", " leading space", "trailing space ", "It's SHE'S they'll", "12345 678901 3.14159",
    "line one\nline two\r\n\n  indented", "Grüße, Köln! 東京 🙂🙂", "   ", "a\tb", "x" * 40, "",
]


def tokenizer_families():
    """Tiny tokenizers in the layouts of the families alignd meets, trained here (no download)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    out = {}
    # Llama 3 / Qwen2 style: regex split (digits in groups of up to 3), then byte-level BPE.
    llama3_split = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                    r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(llama3_split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TOKENIZER_CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|begin_of_text|>", "<|eot_id|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    out["bytelevel-split"] = (tok, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    # Llama 2 / Mistral style: SentencePiece-like Metaspace BPE with byte fallback.
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(TOKENIZER_CORPUS, trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens, show_progress=False))
    out["metaspace-bytefallback"] = (tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    return out


def phase_tokenizers():
    os.chdir(OUT)
    """Encodings and decodings by the Rust tokenizers library, for tokenizers.js to match."""
    base = Path("tokenizers")
    for name, (tok, cfg) in tokenizer_families().items():
        d = base / name
        d.mkdir(parents=True, exist_ok=True)
        tok.save(str(d / "tokenizer.json"))
        if name == "metaspace-bytefallback":
            # Byte tokens belong to the model vocabulary, not to the special added tokens.
            j = json.loads((d / "tokenizer.json").read_text())
            j["added_tokens"] = [a for a in j["added_tokens"] if not a["content"].startswith("<0x")]
            (d / "tokenizer.json").write_text(json.dumps(j, ensure_ascii=False))
            from tokenizers import Tokenizer
            tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "clean_up_tokenization_spaces": False}, indent=2) + "\n")
        probes = []
        for text in TOKENIZER_PROBES:
            ids = tok.encode(text, add_special_tokens=False).ids
            probes.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
        (d / "probes.json").write_text(json.dumps(probes, indent=1, ensure_ascii=False) + "\n")
        print(f"tokenizer {name}: {tok.get_vocab_size()} tokens, {len(probes)} probes")


def phase_semantics():
    """Behaviours of transformers / PEFT / TRL that alignd must match or refuse (issue 14), written to
    semantics/: an aLoRA adapter and how far PEFT's output is from plain LoRA; final hidden states of
    a left-padded batch; a BPE tokenizer with clean_up_tokenization_spaces=true and a bos
    post-processor (decoding, the empty string); TRL's DPO losses on sequences whose log-probs are
    recorded beside them (sigmoid with label_smoothing, robust, RPO = sigmoid + sft, IPO)."""
    os.chdir(OUT)
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer
    out = Path("semantics")
    out.mkdir(exist_ok=True)
    report = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__, "trl": trl.__version__}}

    # aLoRA: PEFT applies the adapter only from the invocation sequence on.
    base = load_base("llama/model")
    invocation = [9, 23]
    ids = [1, 5, 9, 23, 42, 17, 3, 60, 11, 7]
    torch.manual_seed(5)
    alora = get_peft_model(load_base("llama/model"), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                               alora_invocation_tokens=invocation, init_lora_weights=False))
    alora.eval()
    alora.save_pretrained(str(out / "alora-adapter"))
    with torch.no_grad():
        lg_alora = alora(torch.tensor([ids])).logits[0]
        plain = get_peft_model(load_base("llama/model"), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
        plain.load_state_dict(alora.state_dict(), strict=False)
        for n, p in plain.named_parameters():
            if "lora_" in n:
                p.copy_(dict(alora.named_parameters())[n])
        plain.eval()
        lg_plain = plain(torch.tensor([ids])).logits[0]
        lg_base = base(torch.tensor([ids])).logits[0]
    start = 2  # ids[2:4] is the invocation sequence
    report["alora"] = {"invocation_tokens": invocation, "ids": ids,
                       "max_abs_dlogit_vs_lora_on_every_token": (lg_alora - lg_plain).abs().max().item(),
                       "max_abs_dlogit_vs_base_before_invocation": (lg_alora[:start] - lg_base[:start]).abs().max().item()}

    # Final hidden states of a left-padded batch (pad id 0, mask 0) at the last position = the last real token.
    rows = [[1, 5, 9, 23, 42, 17, 3], [2, 33, 8, 51]]
    T = max(len(r) for r in rows)
    left = torch.tensor([[0] * (T - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        hidden = base.model(input_ids=left, attention_mask=mask).last_hidden_state[:, -1, :].float()
    save_file({"last_hidden": hidden.contiguous()}, str(out / "left-padded.safetensors"), metadata={"format": "pt"})
    report["left_padded"] = {"model": "llama/model", "input_ids": left.tolist(), "attention_mask": mask.tolist()}

    # A Llama-3-layout BPE tokenizer with a bos post-processor and clean_up_tokenization_spaces: true.
    tdir = out / "tokenizer-bos"
    tdir.mkdir(exist_ok=True)
    raw = Tokenizer.from_file("tokenizers/bytelevel-split/tokenizer.json")
    bos = "<|begin_of_text|>"
    raw.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, raw.token_to_id(bos))])
    raw.save(str(tdir / "tokenizer.json"))
    (tdir / "tokenizer_config.json").write_text(json.dumps({"bos_token": bos, "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": True,
                                                            "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2) + "\n")
    tok = AutoTokenizer.from_pretrained(str(tdir))
    texts = ["Hello , world .", "It 's done ; isn 't it ?", "a ! b ? c .", ""]
    report["tokenizer_bos"] = {"clean_up_tokenization_spaces": tok.clean_up_tokenization_spaces, "probes": [
        {"text": t, "ids": tok(t)["input_ids"], "ids_no_special": tok(t, add_special_tokens=False)["input_ids"],
         "decoded": tok.decode(tok(t)["input_ids"]), "decoded_skip_special": tok.decode(tok(t)["input_ids"], skip_special_tokens=True)}
        for t in texts]}

    # TRL's DPO losses. The policy is the llama model with a LoRA adapter (random A and B), the
    # reference the base (adapter disabled), as TRL does for a PEFT model without ref_model.
    ptok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file("tokenizers/bytelevel-split/tokenizer.json"),
                                   bos_token=bos, eos_token="<|eot_id|>", pad_token="<|eot_id|>")
    data = Dataset.from_list([
        {"prompt": "The assistant answered", "chosen": " the question, and the user said thanks.", "rejected": " no."},
        {"prompt": "Numbers like 12345", "chosen": " appear.", "rejected": " and 2026 appear; so do URLs such as example.org/path?q=1."},
        {"prompt": "It's, we're", "chosen": " they'll, I'd", "rejected": " you've, SHE'S, don't: contractions in both cases."},
    ])
    trl_cases = [("sigmoid", {"loss_type": ["sigmoid"]}), ("sigmoid_label_smoothing_0.1", {"loss_type": ["sigmoid"], "label_smoothing": 0.1}),
                 ("robust_0.1", {"loss_type": ["robust"], "label_smoothing": 0.1}), ("rpo_0.5", {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}),
                 ("ipo", {"loss_type": ["ipo"]})]
    report["trl_dpo"] = {"beta": 0.5, "cases": {}}
    # A tiny Llama over the tokenizer's vocabulary (the parity models have 64 ids); only its outputs are recorded.
    trl_model_dir = WORK / "trl-model"
    gen = torch.Generator().manual_seed(21)
    torch.manual_seed(21)
    m0 = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=len(ptok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                                      tie_word_embeddings=True, bos_token_id=ptok.bos_token_id, eos_token_id=ptok.eos_token_id),
                                          attn_implementation="eager")
    big_init(m0, gen)
    m0.save_pretrained(str(trl_model_dir))
    for name, kw in trl_cases:
        torch.manual_seed(11)
        model = AutoModelForCausalLM.from_pretrained(str(trl_model_dir), dtype=torch.float32, attn_implementation="eager")
        args = DPOConfig(output_dir=str(WORK / "trl"), per_device_train_batch_size=3, beta=0.5, report_to=[], use_cpu=True,
                         max_length=64, seed=11, **kw)
        trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=ptok,
                             peft_config=LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        trainer.model.eval()
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, batch).item()
            ids_t, comp = batch["input_ids"], batch["completion_mask"]
            att = batch["attention_mask"]
            def seq_logps(m):
                lp = torch.log_softmax(m(input_ids=ids_t, attention_mask=att).logits[:, :-1].double(), -1)
                tok_lp = lp.gather(-1, ids_t[:, 1:, None])[..., 0] * comp[:, 1:]
                return tok_lp.sum(1)
            pol = seq_logps(trainer.model)
            with trainer.model.disable_adapter():
                ref = seq_logps(trainer.model)
        n = ids_t.shape[0] // 2
        lengths = comp[:, 1:].sum(1)
        report["trl_dpo"]["cases"][name] = {
            "config": kw, "loss": loss,
            "chosen": pol[:n].tolist(), "rejected": pol[n:].tolist(), "ref_chosen": ref[:n].tolist(), "ref_rejected": ref[n:].tolist(),
            "chosen_length": lengths[:n].tolist(), "rejected_length": lengths[n:].tolist()}
        print(f"trl {name}: loss {loss:.6f}")
    (out / "semantics.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"semantics: aLoRA vs LoRA-everywhere max |dlogit| {report['alora']['max_abs_dlogit_vs_lora_on_every_token']:.3f}")


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    {"base": phase_base, "check": phase_check, "tokenizers": phase_tokenizers, "semantics": phase_semantics}[sys.argv[1]]()
