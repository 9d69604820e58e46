"""The ablation variants of a training table: fewer completions per prompt (density), noisier rewards (noise)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from rpo import io


def keep_count(n: int, density: float) -> int:
    """round(density * n) with halves rounded up, and at least one response per prompt."""
    return max(1, int(np.floor(density * n + 0.5)))


def density_variant(train: pd.DataFrame, density: float, seed: int) -> pd.DataFrame:
    """Keep keep_count(n_x, density) of each prompt's n_x responses, drawn without replacement."""
    rng = np.random.default_rng(seed)
    kept = []
    for _, group in train.groupby("prompt_id", sort=True):
        kept.extend(rng.choice(group.index.to_numpy(), size=keep_count(len(group), density), replace=False))
    return train.loc[sorted(kept)].reset_index(drop=True)


def noise_variant(train: pd.DataFrame, sigma: float, seed: int) -> pd.DataFrame:
    """reward + N(0, sigma^2) on the standardised training rewards (reward_raw keeps the clean value)."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, size=len(train))
    return train.assign(reward=train["reward"].to_numpy() + noise)


def make_variant(cfg: dict, train_path, kind: str, value: float, out_path) -> dict:
    """Write the variant; return its prompt counts, with the prompts left with fewer than 2 completions (there an
    empirical partition estimate has one reward to average: V_hat = r under the paper's mean estimator)."""
    train = pd.read_parquet(train_path)
    seed = cfg["data"]["variant_seed"]
    table = density_variant(train, value, seed) if kind == "density" else noise_variant(train, value, seed)
    io.write_parquet(table, out_path)
    per_prompt = table.groupby("prompt_id").size()
    single = int((per_prompt < 2).sum())
    if single:
        print(f"{out_path}: {single} of {len(per_prompt)} prompts have fewer than 2 completions", file=sys.stderr)
    return {"rows": len(table), "prompts": len(per_prompt), "prompts_under_2_completions": single}
