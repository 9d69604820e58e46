"""The synthetic world's training set, sampled from a reference: several completions per training prompt, each
scored by the world's true reward."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rpo import io
from rpo.data import prepare, synthetic
from rpo.io import md5
from rpo.models import generation


def sample_training_data(cfg: dict, model_name: str, model_dir, prompts_path, out_path) -> dict:
    """The UltraFeedback-shaped training set of the synthetic world: several completions per training prompt sampled
    from this model's reference, each scored by the world's true reward; duplicates and prompts left with fewer than
    `data.min_responses_per_prompt` distinct completions are dropped (counted in the manifest)."""
    scfg, dcfg = cfg["data"]["sample_from_reference"], cfg["data"]
    gcfg = generation.plain_sampling(
        cfg["generate"], scfg["max_new_tokens"], scfg["temperature"], scfg["top_k"], scfg["top_p"]
    )
    generator = generation.TransformersGenerator(
        model_dir, cfg["models"][model_name], gcfg, cfg["train"]["max_prompt_len"]
    )
    prompts = pd.read_parquet(prompts_path)["prompt"].drop_duplicates().tolist()
    asked = [p for p in prompts for _ in range(scfg["completions"])]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".jsonl.partial")
    rows = generation.generate_rows(
        generator,
        prompts,
        [{"prompt": p} for p in asked],
        partial,
        # batches of generate.batch_size sequences whatever sample_batch_size says: the batches (and their seeds)
        # decide which completions are drawn, and a speed setting must not redraw the training set
        generation.prompts_per_batch(gcfg | {"sample_batch_size": None}, scfg["completions"]),
        scfg["seed"],
        desc=f"sample {scfg['completions']} completions per prompt",
        per_prompt=scfg["completions"],
    )
    frame = pd.DataFrame({"prompt": [r["prompt"] for r in rows], "response": [r["generation"] for r in rows]})
    frame = frame[frame["response"].str.strip() != ""].drop_duplicates()
    counts = frame.groupby("prompt")["response"].transform("size")
    kept = frame[counts >= dcfg["min_responses_per_prompt"]].reset_index(drop=True)
    reward_raw = np.array([synthetic.reward(p, r) for p, r in zip(kept["prompt"], kept["response"])])
    mean, std = float(reward_raw.mean()), float(reward_raw.std()) or 1.0
    table = pd.DataFrame(
        {
            "row": np.arange(len(kept)),
            "prompt_id": kept["prompt"].map(prepare.prompt_id),
            "prompt": kept["prompt"],
            "response": kept["response"],
            "reward_raw": reward_raw,
            "reward": (reward_raw - mean) / std,
            "split": "train",
        }
    )[prepare.COLUMNS]
    io.write_parquet(table, out_path)
    partial.unlink()
    manifest = {
        "model": model_name,
        "prompts": len(prompts),
        "completions_asked": len(asked),
        "rows": len(table),
        "prompts_kept": int(table["prompt_id"].nunique()),
        "dropped_duplicates_or_empty": len(asked) - len(frame),
        "dropped_prompts_too_few_completions": len(prompts) - int(table["prompt_id"].nunique()),
        "reward_raw": {"mean": mean, "std": std, "share_10": float((reward_raw == 10).mean())},
        "md5": md5(out_path),
    }
    io.write_text(out_path.with_name("manifest.json"), json.dumps(manifest, indent=2))
    return manifest
