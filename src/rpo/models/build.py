"""Models and tokenizers for both architectures: build tiny ones, convert GGUF, load any, wrap with LoRA.

Everything loads through AutoTokenizer / AutoModelForCausalLM / AutoModelForSeq2SeqLM, the same
code path that loads hub checkpoints on a cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerFast,
    T5Config,
)

from rpo import io

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on the given texts with the `tokenizers` library."""
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
    io.write_text(out_dir / POINTER, json.dumps({"path": path}))


def convert_gguf(folder: str, gguf_file: str, out_dir: str | Path) -> None:
    """Dequantise a GGUF checkpoint once into a plain safetensors folder that every later step loads fast
    (transformers 5 reads GGUF through the `gguf` package; the quantizer must go before save_pretrained)."""
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with io.atomic(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "init.json").write_text(
            json.dumps({"source": f"{folder}/{gguf_file}", "parameters": sum(p.numel() for p in model.parameters())})
        )


def load(path: str | Path, arch: str):
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
    from peft import LoraConfig, TaskType, get_peft_model  # lazy: ~5 s to import on 2 cores, LoRA runs only

    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    config = LoraConfig(
        task_type=task,
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=lora["target_modules"] or "all-linear",
    )
    return get_peft_model(model, config)


def disable_dropout(model) -> None:
    """Policy and cached reference log-probs must come from the same deterministic function."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in vars(module).items():  # attention kernels read plain float rates
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)
