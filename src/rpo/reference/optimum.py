"""N completions per held-out prompt drawn from the reference, scored by the synthetic world's true reward: the
sample the KL-regularised optimum is estimated from (rpo.report.optimum)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rpo.data import synthetic
from rpo.io import fresh
from rpo.models import generation


def reward_scale(train: pd.DataFrame) -> tuple[float, float]:
    """(mean, std) with reward = (reward_raw - mean) / std on the training table: the scale beta acts on."""
    raw, std = train["reward_raw"].to_numpy(float), train["reward"].to_numpy(float)
    scale = float(raw.std() / std.std()) if std.std() > 0 else 1.0
    return float(raw.mean() - scale * std.mean()), scale


def sample_for_optimum(cfg: dict, model_name: str, model_dir, eval_path, train_path, out_path) -> dict:
    ocfg = cfg["optimum"]
    prompts = pd.read_parquet(eval_path)[["prompt_id", "prompt"]]
    mean, std = reward_scale(pd.read_parquet(train_path))
    gcfg = generation.plain_sampling(cfg["generate"], cfg["generate"]["max_new_tokens"])
    generator = generation.make_generator(cfg, model_name, model_dir, gcfg)
    n = ocfg["samples_per_prompt"]
    asked = [r for r in prompts.itertuples() for _ in range(n)]
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    rows = generation.generate_rows(
        generator,
        [r.prompt for r in asked],
        [
            {"model": model_name, "prompt_id": r.prompt_id, "prompt": r.prompt, "sample": j % n}
            for j, r in enumerate(asked)
        ],
        partial,
        cfg["generate"]["batch_size"],
        ocfg["seed"],
        desc=f"{n} reference samples per held-out prompt ({model_name})",
    )
    rewards = np.array([synthetic.reward(r["prompt"], r["generation"]) for r in rows])
    with open(fresh(out_path), "w") as sink:
        for row, raw in zip(rows, rewards):
            sink.write(json.dumps(row | {"reward_raw": float(raw), "reward": (float(raw) - mean) / std}) + "\n")
    partial.unlink()
    return {
        "prompts": len(prompts),
        "samples_per_prompt": n,
        "reward_raw_mean": float(rewards.mean()),
        "train_reward_mean": mean,
        "train_reward_std": std,
    }
