"""Batched, seeded generation (transformers or vLLM), written incrementally so a rerun after a crash continues
where it stopped. Used to sample training data from a reference and to generate for evaluation."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import GenerationConfig

from rpo import config as config_lib
from rpo import io
from rpo.models import batching, build


def generation_kwargs(gcfg: dict, tokenizer) -> dict:
    kwargs = dict(
        max_new_tokens=gcfg["max_new_tokens"],
        do_sample=gcfg["do_sample"],
        repetition_penalty=gcfg["repetition_penalty"],
        no_repeat_ngram_size=gcfg["no_repeat_ngram_size"],
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if gcfg["do_sample"]:
        kwargs.update(temperature=gcfg["temperature"], top_k=gcfg["top_k"], top_p=gcfg["top_p"])
    return kwargs


def plain_sampling(
    gcfg: dict, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> dict:
    """Generation settings that sample from the model's own distribution: no repetition penalty, no n-gram blocking
    (with the defaults, temperature 1 and no top-k/top-p: exactly pi(y|x), the distribution the KL-regularised
    objectives are about)."""
    return {
        **gcfg,
        "do_sample": True,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "max_new_tokens": max_new_tokens,
    }


TOKEN_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def clean_generation_config(model) -> GenerationConfig:
    """The checkpoint's token ids and nothing else of its generation_config: a repetition penalty, n-gram blocking,
    a minimum length, bad words or forced tokens it carries would change the distribution decoded from (unset
    settings are filled from the checkpoint's config, so replacing it is the only way to drop them)."""
    return GenerationConfig(**{k: getattr(model.generation_config, k, None) for k in TOKEN_IDS})


def prompts_per_batch(gcfg: dict, per_prompt: int) -> int:
    """Prompts in one batch when `per_prompt` samples are drawn for each: generate.sample_batch_size sequences
    (default generate.batch_size), at least one prompt."""
    return max(1, (gcfg["sample_batch_size"] or gcfg["batch_size"]) // per_prompt)


def batch_seed(seed: int, pass_index: int, batch_index: int) -> int:
    """Each batch has its own seed, so a resumed run draws exactly what an uninterrupted one would."""
    return seed * 1_000_003 + pass_index * 100_003 + batch_index


class TransformersGenerator:
    def __init__(self, model_dir, spec: dict, gcfg: dict, max_prompt_len: int):
        self.digest = io.folder_digest(model_dir)
        self.model, self.tokenizer = build.load(model_dir, spec["arch"])
        self.model.to(build.device()).eval()
        self.model.generation_config = clean_generation_config(self.model)  # decode with the config's settings only
        self.spec, self.max_prompt_len = spec, max_prompt_len
        self.configure(gcfg)

    def configure(self, gcfg: dict) -> None:
        """Decode with other settings (greedy, then samples) without loading the model again."""
        self.gcfg, self.kwargs = gcfg, generation_kwargs(gcfg, self.tokenizer)

    @torch.no_grad()
    def __call__(self, prompts: list, seed: int, return_ids: bool = False, n: int = 1):
        """The generated texts, `n` per prompt (prompt-major: each prompt encoded once, its n sequences decoded side
        by side); with `return_ids`, each as {"generation", "prompt_ids", "response_ids"}."""
        input_ids, attention_mask = batching.encode_prompts(
            self.tokenizer, self.spec["arch"], prompts, self.max_prompt_len, self.spec["chat_template"]
        )
        torch.manual_seed(seed)
        output = self.model.generate(
            input_ids=input_ids.to(self.model.device),
            attention_mask=attention_mask.to(self.model.device),
            num_return_sequences=n,
            **self.kwargs,
        ).cpu()
        if n > 1:  # the prompts as generate expanded them, one per returned sequence
            input_ids, attention_mask = input_ids.repeat_interleave(n, 0), attention_mask.repeat_interleave(n, 0)
        new = output[:, input_ids.shape[1] :] if self.spec["arch"] == "causal" else output
        texts = [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        if not return_ids:
            return texts
        ids = batching.generated_ids(input_ids, attention_mask, output, self.spec["arch"], self.tokenizer.eos_token_id)
        return [dict(generation=t, prompt_ids=p, response_ids=r) for t, p, r in zip(texts, *ids)]


class VLLMGenerator:
    """vLLM (causal models only). It has no no_repeat_ngram_size; everything else maps one to one."""

    def __init__(self, model_dir, spec: dict, gcfg: dict, max_prompt_len: int):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise RuntimeError("config key 'generate.backend': 'vllm' needs `pip install vllm` (GPU machines)") from exc
        if spec["arch"] != "causal":
            raise RuntimeError("config key 'generate.backend': vLLM serves causal models only; use 'transformers'")
        self.digest = io.folder_digest(model_dir)
        pointer = Path(model_dir) / build.POINTER
        path = json.loads(pointer.read_text())["path"] if pointer.exists() else str(model_dir)
        self.llm = LLM(model=path, dtype="auto")
        self.tokenizer = self.llm.get_tokenizer()
        self.spec, self.gcfg, self.params = spec, gcfg, SamplingParams

    def configure(self, gcfg: dict) -> None:
        self.gcfg = gcfg

    def __call__(self, prompts: list, seed: int, n: int = 1) -> list[str]:
        g = self.gcfg
        params = self.params(
            n=n,
            max_tokens=g["max_new_tokens"],
            seed=seed,
            repetition_penalty=g["repetition_penalty"],
            **(
                dict(temperature=g["temperature"], top_k=g["top_k"] or -1, top_p=g["top_p"])
                if g["do_sample"]
                else dict(temperature=0.0)
            ),
        )
        texts = batching.format_prompts(self.tokenizer, prompts, self.spec["chat_template"])
        return [c.text.strip() for o in self.llm.generate(texts, params, use_tqdm=False) for c in o.outputs]


def make_generator(cfg: dict, model_name: str, model_dir, gcfg: dict | None = None):
    """The configured backend for a model, decoding with `gcfg` (default: the config's generate section)."""
    cfg = config_lib.for_model(cfg, model_name)
    gcfg = gcfg or cfg["generate"]
    cls = VLLMGenerator if gcfg["backend"] == "vllm" else TransformersGenerator
    return cls(model_dir, cfg["models"][model_name], gcfg, cfg["train"]["max_prompt_len"])


def resume_fingerprint(
    generator, prompts: list, meta: list[dict], batch_size: int, seed: int, pass_index: int, per_prompt: int = 1
) -> str:
    """What decides a resume file's rows: the model's files, the decoding settings, the prompts and their metadata,
    the batching and the seeds. A resume file with another one belongs to another run."""
    model = [getattr(generator, name, None) for name in ("digest", "gcfg", "spec")]
    shaping = [*model, prompts, meta, batch_size, seed, pass_index] + ([per_prompt] if per_prompt > 1 else [])
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()


def _complete_rows(partial: Path, rows_per_batch: int, fingerprint: str) -> list[dict]:
    """The whole batches of an interrupted run's resume file, when its first line carries this run's fingerprint."""
    if not partial.exists():
        return []
    lines = partial.read_text(errors="replace").splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if not isinstance(header, dict) or header.get("resume_fingerprint") != fingerprint:
        print(f"warning: {partial}: left by another run (other model, settings or prompts); discarded", file=sys.stderr)
        return []
    rows = []
    for line in lines[1:]:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: regenerate from there
            break
    return rows[: len(rows) // rows_per_batch * rows_per_batch]  # whole batches only


def generate_rows(
    generator,
    prompts: list,
    meta: list[dict],
    partial: Path,
    batch_size: int,
    seed: int,
    pass_index: int = 0,
    desc: str = "generate",
    keep_ids: bool = False,
    per_prompt: int = 1,
) -> list[dict]:
    """Generate for every prompt, appending `meta[i] | {"generation": ...}` to `partial` batch by batch (fsynced);
    `keep_ids`: also the prompt's and the response's token ids (the transformers backend). `per_prompt` > 1:
    that many samples per prompt, drawn together (`meta` holds per_prompt rows per prompt, prompt-major), in
    batches of `batch_size` prompts. Rows already in `partial` from an interrupted run are kept and their batches
    skipped."""
    extra = ({"return_ids": True} if keep_ids else {}) | ({"n": per_prompt} if per_prompt > 1 else {})
    if len(meta) != len(prompts) * per_prompt:
        raise ValueError(f"{len(meta)} metadata rows for {len(prompts)} prompts x {per_prompt}")
    fingerprint = resume_fingerprint(generator, prompts, meta, batch_size, seed, pass_index, per_prompt)
    done = _complete_rows(partial, batch_size * per_prompt, fingerprint)
    rows = list(done)
    with open(partial, "w") as sink:
        sink.write(json.dumps({"resume_fingerprint": fingerprint}) + "\n")
        for row in done:  # rewrite the complete rows only, dropping a cut-off tail
            sink.write(json.dumps(row) + "\n")
        starts = range(0, len(prompts), batch_size)
        for index, start in enumerate(tqdm(starts, desc=desc)):
            if start * per_prompt < len(done):
                continue
            texts = generator(prompts[start : start + batch_size], batch_seed(seed, pass_index, index), **extra)
            for info, text in zip(meta[start * per_prompt : (start + batch_size) * per_prompt], texts, strict=True):
                rows.append(info | (text if keep_ids else {"generation": text}))
                sink.write(json.dumps(rows[-1]) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
    return rows
