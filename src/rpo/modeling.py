"""Models and tokenizers for both architectures: build tiny ones, load any, score response tokens.

Everything loads through AutoTokenizer / AutoModelForCausalLM / AutoModelForSeq2SeqLM, the same
code path that loads hub checkpoints on a cluster.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on the given texts with the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def build_tiny_model(arch: str, tokenizer, spec: dict, seed: int = 0):
    """A randomly initialised Llama-style decoder or T5-style encoder-decoder."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, LlamaConfig, T5Config

    torch.manual_seed(seed)
    ids = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if arch == "causal":
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec["hidden_size"],
            intermediate_size=spec["intermediate_size"],
            num_hidden_layers=spec["num_layers"],
            num_attention_heads=spec["num_heads"],
            num_key_value_heads=spec["num_heads"],
            max_position_embeddings=1024,
            bos_token_id=tokenizer.bos_token_id,
            tie_word_embeddings=True,
            **ids,
        )
        return AutoModelForCausalLM.from_config(config)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=spec["hidden_size"],
        d_kv=spec["hidden_size"] // spec["num_heads"],
        d_ff=spec["intermediate_size"],
        num_layers=spec["num_layers"],
        num_decoder_layers=spec["num_layers"],
        num_heads=spec["num_heads"],
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,  # rescales the output by d_model**-0.5: sane logits at random init
        **ids,
    )
    return AutoModelForSeq2SeqLM.from_config(config)


POINTER = "pretrained.json"


def save_pointer(out_dir: str | Path, path: str) -> None:
    """For a pretrained model the init step records where it lives instead of copying gigabytes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / POINTER).write_text(json.dumps({"path": path}))


def convert_gguf(folder: str, gguf_file: str, out_dir: str | Path) -> None:
    """Dequantise a GGUF checkpoint once into a plain safetensors folder that every later step loads fast
    (transformers 5 reads GGUF through the `gguf` package; the quantizer must go before save_pretrained)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (Path(out_dir) / "init.json").write_text(json.dumps({"source": f"{folder}/{gguf_file}", "parameters": sum(
        p.numel() for p in model.parameters())}))


def load(path: str | Path, arch: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    pointer = Path(path) / POINTER
    if pointer.exists():
        path = json.loads(pointer.read_text())["path"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    auto = AutoModelForCausalLM if arch == "causal" else AutoModelForSeq2SeqLM
    return auto.from_pretrained(path), tokenizer


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def with_lora(model, lora: dict):
    """Wrap the model with LoRA adapters (peft); only the adapters train."""
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    config = LoraConfig(task_type=task, r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=lora["target_modules"] or "all-linear")
    return get_peft_model(model, config)


def disable_dropout(model) -> None:
    """Policy and cached reference log-probs must come from the same deterministic function."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():  # attention kernels read plain float rates
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)


@dataclass
class Batch:
    """Tokenised (prompt, response) pairs; `response_mask` marks the tokens that are scored."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    labels: torch.Tensor | None = None  # seq2seq only: decoder targets, padding = pad id

    def to(self, device) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.input_ids), move(self.attention_mask), move(self.response_mask), move(self.labels))


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def format_prompts(tokenizer, prompts: list, chat_template: bool) -> list[str]:
    """The tokenizer's chat template around each prompt, when the config asks and the tokenizer has one.

    A prompt is a string (one user turn) or a conversation: a list of {"role", "content"} messages ending with a
    user turn. Without a chat template a conversation becomes its turns joined by blank lines."""
    conversations = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    if not chat_template or not getattr(tokenizer, "chat_template", None):
        return ["\n\n".join(m["content"] for m in c) for c in conversations]
    return [tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]


def encode(tokenizer, arch: str, prompts: list[str], responses: list[str], max_prompt_len: int, max_response_len: int,
           chat_template: bool = False) -> Batch:
    """Dynamic padding to the longest pair in the batch; the response ends with EOS."""
    prompts = format_prompts(tokenizer, prompts, chat_template)
    prompt_ids = [ids[-max_prompt_len:] for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    response_ids = [ids[: max_response_len - 1] + [tokenizer.eos_token_id] for ids in tokenizer(responses, add_special_tokens=False)["input_ids"]]
    return batch_from_ids(tokenizer, arch, prompt_ids, response_ids)


def batch_from_ids(tokenizer, arch: str, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> Batch:
    """Right-padded (prompt, response) token ids; only response tokens are scored."""
    pad = tokenizer.pad_token_id
    if arch == "causal":
        seqs = [p + r for p, r in zip(prompt_ids, response_ids)]
        masks = [[0] * len(p) + [1] * len(r) for p, r in zip(prompt_ids, response_ids)]
        return Batch(_pad(seqs, pad), _pad([[1] * len(s) for s in seqs], 0), _pad(masks, 0))
    enc = [p + [tokenizer.eos_token_id] for p in prompt_ids]
    return Batch(
        input_ids=_pad(enc, pad),
        attention_mask=_pad([[1] * len(e) for e in enc], 0),
        response_mask=_pad([[1] * len(r) for r in response_ids], 0),
        labels=_pad(response_ids, pad),
    )


def encode_prompts(tokenizer, arch: str, prompts: list[str], max_prompt_len: int,
                   chat_template: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts for generation: left-padded for causal models, EOS-terminated for encoder-decoders."""
    prompts = format_prompts(tokenizer, prompts, chat_template)
    ids = [p[-max_prompt_len:] for p in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    if arch == "seq2seq":
        ids = [p + [tokenizer.eos_token_id] for p in ids]
        return _pad(ids, tokenizer.pad_token_id), _pad([[1] * len(p) for p in ids], 0)
    width = max(len(p) for p in ids)
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in ids], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in ids], dtype=torch.long)
    return input_ids, mask


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per position, zero where mask is 0 ([B, T, V] -> [B, T])."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logps * mask


def _pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


@dataclass
class Scores:
    token_logps: torch.Tensor  # [B, T], zero outside the response
    mask: torch.Tensor  # [B, T], 1 on scored response tokens
    prompt_repr: torch.Tensor | None = None  # [B, H], masked mean of the prompt's last hidden states

    @property
    def sum_logp(self) -> torch.Tensor:
        return self.token_logps.sum(-1)

    @property
    def n_tokens(self) -> torch.Tensor:
        return self.mask.sum(-1)


def chunked_logprobs(lm_head, hidden: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """gather_logprobs(lm_head(hidden), ...) without the [B, T, V] logits: the output layer runs on scored
    positions only, chunk_size rows at a time, and each chunk's float32 logits are recomputed in the
    backward pass instead of kept."""
    from torch.utils.checkpoint import checkpoint

    def piece(h, t):
        return gather_logprobs(lm_head(h), t, torch.ones_like(t))

    keep = mask.bool()
    h, t = hidden[keep], targets[keep]
    values = [checkpoint(piece, h[i:i + chunk_size], t[i:i + chunk_size], use_reentrant=False)
              for i in range(0, len(t), chunk_size)]
    flat = torch.cat(values) if values else hidden.new_zeros(0)
    return torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device).masked_scatter(keep, flat)


def _plain_output_layer(model) -> bool:
    """True when logits are just lm_head(last hidden state): no soft-capping or scaling to reproduce."""
    config = getattr(model, "module", model).config
    return not any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))


def score(model, batch: Batch, prompt_repr: bool = False, chunk_size: int = 0) -> Scores:
    """One forward pass: log-prob of each response token, and optionally a pooled prompt representation.
    chunk_size > 0 (causal models): see chunked_logprobs."""
    if batch.labels is None:
        chunked = chunk_size > 0 and _plain_output_layer(model)
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    output_hidden_states=prompt_repr or chunked, **({"logits_to_keep": 1} if chunked else {}))
        targets, mask = batch.input_ids[:, 1:], batch.response_mask[:, 1:]
        if chunked:
            lm_head = getattr(model, "module", model).get_output_embeddings()
            logps = chunked_logprobs(lm_head, out.hidden_states[-1][:, :-1], targets, mask, chunk_size)
        else:
            logps = gather_logprobs(out.logits[:, :-1], targets, mask)
        pooled = _pool(out.hidden_states[-1], batch.attention_mask * (1 - batch.response_mask)) if prompt_repr else None
    else:
        core = getattr(model, "module", model)  # under DistributedDataParallel
        decoder_input_ids = core.prepare_decoder_input_ids_from_labels(labels=batch.labels)
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=decoder_input_ids)
        logps = gather_logprobs(out.logits, batch.labels, batch.response_mask)
        mask = batch.response_mask
        pooled = _pool(out.encoder_last_hidden_state, batch.attention_mask) if prompt_repr else None
    return Scores(logps, mask, pooled)


def sequence_logprobs(model, batch: Batch, chunk_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-prob and response token count per sequence."""
    scores = score(model, batch, chunk_size=chunk_size)
    return scores.sum_logp, scores.n_tokens


def reduce(sum_logp: torch.Tensor, n_tokens: torch.Tensor, reduction: str) -> torch.Tensor:
    """`sum` over response tokens (default) or `mean` (the released code's choice)."""
    return sum_logp if reduction == "sum" else sum_logp / n_tokens.clamp(min=1)
