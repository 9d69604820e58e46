"""Reference log-probs, computed once per (model, training table) so that training never holds a reference model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from rpo import config as config_lib
from rpo.models import batching, build, logprobs
from rpo.train import objectives


@torch.no_grad()
def _score_rows(model, tokenizer, spec, prompts, responses, train_cfg, desc):
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
    ref_sum, n_tokens = _score_rows(
        model, tokenizer, spec, prompts, responses, train_cfg, f"reference log-probs {model_name}"
    )
    out = pd.DataFrame(
        {"row": range(len(table)), "prompt_id": table["prompt_id"], "ref_logp_sum": ref_sum, "n_tokens": n_tokens}
    )
    if "kto" in cfg["methods"]:
        partners = objectives.mismatched_partners(table["prompt_id"].to_numpy(), seed=cfg["seeds"][0])
        kl_sum, kl_n = _score_rows(
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
