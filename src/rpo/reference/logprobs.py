"""Reference log-probs, computed once per (model, training table) so that training never holds a reference model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rpo import config as config_lib
from rpo.models import batching, build, logprobs
from rpo.train import objectives

# logprobs.chunked_logprobs in one chunk: the output layer on scored positions only, without a gradient to save for
SCORED_ONLY = 1 << 20


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


@torch.no_grad()
def score_sampled(model, tokenizer, arch: str, rows: list[dict], batch_size: int, desc: str) -> np.ndarray:
    """Summed log-prob of each sampled response on the token ids it was drawn as (rows hold prompt_ids and
    response_ids, as `generate_rows(..., keep_ids=True)` writes them). Rows are batched by length (less padding) and
    the output layer runs on response positions only; the result is in the rows' order."""
    order = np.argsort([len(r["prompt_ids"]) + len(r["response_ids"]) for r in rows], kind="stable")
    sums = np.zeros(len(rows))
    for part in tqdm(batching.batch_slices(len(rows), batch_size), desc=desc):
        chunk = [rows[i] for i in order[part]]
        batch = batching.batch_from_ids(
            tokenizer, arch, [r["prompt_ids"] for r in chunk], [r["response_ids"] for r in chunk]
        )
        total, _ = logprobs.sequence_logprobs(model, batch.to(build.device()), chunk_size=SCORED_ONLY)
        sums[order[part]] = total.double().cpu().numpy()
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
    out = pd.DataFrame(
        {"row": range(len(table)), "prompt_id": table["prompt_id"], "ref_logp_sum": ref_sum, "n_tokens": n_tokens}
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
    out.to_parquet(out_path, index=False)
