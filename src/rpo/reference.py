"""The reference policy: create it (tiny from scratch, or point at a pretrained one) and cache its log-probs.

Reference log-probs are computed once per (model, dataset) so training never holds a reference model.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from rpo import modeling


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
def compute_ref_logprobs(cfg: dict, model_name: str, model_dir: str | Path, train_path: str | Path, out_path: str | Path) -> None:
    spec, train_cfg = cfg["models"][model_name], cfg["train"]
    model, tokenizer = modeling.load(model_dir, spec["arch"])
    model.eval()
    table = pd.read_parquet(train_path)
    sums, counts = [], []
    for rows in tqdm(batch_slices(len(table), train_cfg["batch_size"] * 4), desc=f"reference log-probs {model_name}"):
        part = table.iloc[rows]
        batch = modeling.encode(tokenizer, spec["arch"], part["prompt"].tolist(), part["response"].tolist(),
                                train_cfg["max_prompt_len"], train_cfg["max_response_len"])
        total, n_tokens = modeling.sequence_logprobs(model, batch)
        sums.append(total.double())
        counts.append(n_tokens)
    out = pd.DataFrame({
        "row": range(len(table)),
        "prompt_id": table["prompt_id"],
        "ref_logp_sum": torch.cat(sums).numpy(),
        "n_tokens": torch.cat(counts).numpy(),
    })
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(out_path, index=False)
