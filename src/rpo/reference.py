"""The reference policy: create it (tiny from scratch, or point at a pretrained one) and cache its log-probs.

Reference log-probs are computed once per (model, dataset) so training never holds a reference model.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from rpo import config as config_lib
from rpo import modeling, objectives


def init_model(cfg: dict, model_name: str, train_path: str | Path, out_dir: str | Path) -> None:
    spec = cfg["models"][model_name]
    out_dir = Path(out_dir)
    if spec["source"] == "pretrained":
        modeling.save_pointer(out_dir, spec["path"])
        return
    table = pd.read_parquet(train_path)
    texts = pd.concat([table["prompt"], table["response"]]).drop_duplicates().tolist()
    tokenizer = modeling.build_tokenizer(texts, spec["tiny"]["vocab_size"])
    model = modeling.build_tiny_model(spec["arch"], tokenizer, spec["tiny"], seed=cfg["seeds"][0])
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    (out_dir / "init.json").write_text(json.dumps({"arch": spec["arch"], "parameters": n_params, "vocab": len(tokenizer)}))


def batch_slices(n: int, size: int):
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


@torch.no_grad()
def _score_rows(model, tokenizer, spec, prompts, responses, train_cfg, desc):
    sums, counts = [], []
    for rows in tqdm(batch_slices(len(prompts), train_cfg["batch_size"] * 4), desc=desc):
        batch = modeling.encode(tokenizer, spec["arch"], prompts[rows], responses[rows], train_cfg["max_prompt_len"],
                                train_cfg["max_response_len"], spec["chat_template"])
        total, n_tokens = modeling.sequence_logprobs(model, batch.to(modeling.device()), train_cfg["logprob_chunk_size"])
        sums.append(total.double().cpu())
        counts.append(n_tokens.cpu())
    return torch.cat(sums).numpy(), torch.cat(counts).numpy()


def compute_ref_logprobs(cfg: dict, model_name: str, model_dir: str | Path, train_path: str | Path, out_path: str | Path) -> None:
    """Summed reference log-prob and token count of every training row; with KTO in the config, also of
    each row's mismatched (prompt, other completion) pair, the KL pairs of KTO's reference point."""
    cfg = config_lib.for_model(cfg, model_name)
    spec, train_cfg = cfg["models"][model_name], cfg["train"]
    model, tokenizer = modeling.load(model_dir, spec["arch"])
    model.to(modeling.device()).eval()
    table = pd.read_parquet(train_path)
    prompts, responses = table["prompt"].tolist(), table["response"].tolist()
    ref_sum, n_tokens = _score_rows(model, tokenizer, spec, prompts, responses, train_cfg,
                                    f"reference log-probs {model_name}")
    out = pd.DataFrame({"row": range(len(table)), "prompt_id": table["prompt_id"], "ref_logp_sum": ref_sum, "n_tokens": n_tokens})
    if "kto" in cfg["methods"]:
        partners = objectives.mismatched_partners(table["prompt_id"].to_numpy(), seed=cfg["seeds"][0])
        kl_sum, kl_n = _score_rows(model, tokenizer, spec, prompts, [responses[j] for j in partners], train_cfg,
                                   f"reference log-probs of KL pairs {model_name}")
        out = out.assign(kl_row=partners, ref_kl_logp_sum=kl_sum, kl_n_tokens=kl_n)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(out_path, index=False)
