"""Reference log-probs, computed once per (model, training table) so that training never holds a reference model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rpo import config as config_lib
from rpo import io
from rpo.models import batching, build, logprobs
from rpo.train import objectives


@torch.no_grad()
def score_rows(model, tokenizer, spec, prompts, responses, train_cfg, desc):
    sums, counts = [], []
    for rows in tqdm(batching.batch_slices(len(prompts), train_cfg["batch_size"] * 4), desc=desc):
        batch = batching.encode(
            tokenizer,
            spec["arch"],
            prompts[rows],
            responses[rows],
            train_cfg["max_prompt_len"],
            train_cfg["max_response_len"],
            spec["chat_template"],
        )
        total, n_tokens = logprobs.sequence_logprobs(model, batch.to(build.device()), train_cfg["logprob_chunk_size"])
        sums.append(total.double().cpu())
        counts.append(n_tokens.cpu())
    return torch.cat(sums).numpy(), torch.cat(counts).numpy()


def _responses_of_prompts(model, arch: str, prompts: list[list[int]], owner: list[int], responses: list, pad, eos):
    """Summed log-probs [B] of responses to a few prompts (response i answers prompts[owner[i]]), each prompt run
    once: causal models continue from its cached keys and values, encoder-decoders reuse its encoding."""
    device = model.device
    targets = batching.pad_ids(responses, pad).to(device)
    mask = batching.pad_ids([[1] * len(r) for r in responses], 0).to(device)
    owner = torch.tensor(owner, device=device)
    if arch == "causal":
        width = max(len(p) for p in prompts)  # left-padded, so every prompt's last position is its last token
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
        first = model(input_ids=ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True)
        cache = first.cache
        cache.batch_select_indices(owner)
        attention = torch.cat([prompt_mask[owner], mask], 1)
        steps = torch.arange(targets.shape[1], device=device)
        rest = model(
            input_ids=targets,
            attention_mask=attention,
            position_ids=prompt_mask.sum(1)[owner, None] + steps,
            cache=cache,
        ).logits[:, :-1]
        logits = torch.cat([first.logits[owner, -1:], rest], 1)
    else:
        encoder_ids = batching.pad_ids([p + [eos] for p in prompts], pad).to(device)
        encoder_mask = batching.pad_ids([[1] * (len(p) + 1) for p in prompts], 0).to(device)
        encoded = model.get_encoder()(input_ids=encoder_ids, attention_mask=encoder_mask).last_hidden_state
        logits = model(
            encoder_outputs=(encoded[owner],),
            attention_mask=encoder_mask[owner],
            decoder_input_ids=model.prepare_decoder_input_ids_from_labels(labels=targets),
        ).logits
    return logprobs.gather_logprobs(logits, targets, mask).sum(-1)


@torch.no_grad()
def score_sampled(model, tokenizer, arch: str, rows: list[dict], batch_size: int, desc: str) -> np.ndarray:
    """Summed log-prob of each sampled response on the token ids it was drawn as (rows hold prompt_ids and
    response_ids, as `generate_rows(..., keep_ids=True)` writes them), in the rows' order. Batches of about
    `batch_size` rows hold whole prompts' samples, and each prompt is run once (N samples per prompt share it)."""
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(tuple(row["prompt_ids"]), []).append(i)
    chunks, current = [], []
    for prompt, members in groups.items():
        if current and sum(len(m) for _, m in current) + len(members) > batch_size:
            chunks.append(current)
            current = []
        current.append((list(prompt), members))
    chunks += [current] if current else []
    sums = np.zeros(len(rows))
    for chunk in tqdm(chunks, desc=desc):
        index = [i for _, members in chunk for i in members]
        owner = [k for k, (_, members) in enumerate(chunk) for _ in members]
        values = _responses_of_prompts(
            model,
            arch,
            [prompt for prompt, _ in chunk],
            owner,
            [rows[i]["response_ids"] for i in index],
            tokenizer.pad_token_id,
            tokenizer.eos_token_id,
        )
        sums[index] = values.double().cpu().numpy()
    return sums


def compute_ref_logprobs(
    cfg: dict, model_name: str, model_dir: str | Path, train_path: str | Path, out_path: str | Path
) -> None:
    """Summed reference log-prob and token count of every training row; with KTO in the config, also of
    each row's mismatched (prompt, other completion) pair, the KL pairs of KTO's reference point."""
    cfg = config_lib.for_model(cfg, model_name)
    spec, train_cfg = cfg["models"][model_name], cfg["train"]
    model, tokenizer = build.load(model_dir, spec["arch"])
    model.to(build.device()).eval()
    table = pd.read_parquet(train_path)
    prompts, responses = table["prompt"].tolist(), table["response"].tolist()
    ref_sum, n_tokens = score_rows(
        model, tokenizer, spec, prompts, responses, train_cfg, f"reference log-probs {model_name}"
    )
    cut = batching.truncation(
        tokenizer, prompts, responses, train_cfg["max_prompt_len"], train_cfg["max_response_len"], spec["chat_template"]
    )
    print(json.dumps({"truncation": {k: v for k, v in cut.items() if k != "per_row"}}))
    if warning := batching.truncation_warning(cut, f"{train_path} ({model_name})"):
        print(warning, file=sys.stderr)
    out = pd.DataFrame(
        {
            "row": range(len(table)),
            "prompt_id": table["prompt_id"],
            "ref_logp_sum": ref_sum,
            "n_tokens": n_tokens,
            "prompt_tokens_cut": cut["per_row"][0],
            "response_tokens_cut": cut["per_row"][1],
        }
    )
    if "kto" in cfg["methods"]:
        partners = objectives.mismatched_partners(table["prompt_id"].to_numpy(), seed=cfg["seeds"][0])
        kl_sum, kl_n = score_rows(
            model,
            tokenizer,
            spec,
            prompts,
            [responses[j] for j in partners],
            train_cfg,
            f"reference log-probs of KL pairs {model_name}",
        )
        out = out.assign(kl_row=partners, ref_kl_logp_sum=kl_sum, kl_n_tokens=kl_n)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    io.write_parquet(out, out_path)
