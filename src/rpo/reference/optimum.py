"""Completions drawn from the reference and scored by the synthetic world's true reward: N per held-out prompt, the
sample the KL-regularised optimum is estimated from (rpo.report.optimum), and K per training prompt, the reference
rewards QRPO's quantile rewards are measured against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rpo import config as config_lib
from rpo import io
from rpo.data import synthetic
from rpo.data.prepare import test_part
from rpo.models import generation
from rpo.reference import logprobs


def reward_scale(train: pd.DataFrame) -> tuple[float, float]:
    """(mean, std) with reward = (reward_raw - mean) / std on the training table: the scale beta acts on."""
    raw, std = train["reward_raw"].to_numpy(float), train["reward"].to_numpy(float)
    scale = float(raw.std() / std.std()) if std.std() > 0 else 1.0
    return float(raw.mean() - scale * std.mean()), scale


def _draw(
    cfg: dict,
    model_name: str,
    generator,
    prompts: pd.DataFrame,
    n: int,
    partial: Path,
    pass_index: int,
    desc: str,
    seed: int | None = None,
) -> list:
    return generation.generate_rows(
        generator,
        prompts["prompt"].tolist(),
        [
            {"model": model_name, "prompt_id": r.prompt_id, "prompt": r.prompt, "sample": j}
            for r in prompts.itertuples()
            for j in range(n)
        ],
        partial,
        generation.prompts_per_batch(cfg["generate"], n),
        cfg["optimum"]["seed"] if seed is None else seed,
        pass_index=pass_index,
        desc=desc,
        keep_ids=True,
        per_prompt=n,
    )


def sample_for_optimum(cfg: dict, model_name: str, model_dir, eval_path, train_path, out_path, train_out=None) -> dict:
    """N reference samples per test prompt into `out_path` and, given `train_out`, per optimum.train_prompts
    training prompts (the diagnosis: is the optimum's gain lost on the prompts trained on, or on new ones?), each
    with its true reward (raw and on the training scale) and its summed reference log-prob."""
    ocfg = cfg["optimum"]
    train = pd.read_parquet(train_path)
    mean, std = reward_scale(train)
    gcfg = generation.plain_sampling(cfg["generate"], cfg["generate"]["max_new_tokens"])
    generator = generation.make_generator(cfg, model_name, model_dir, gcfg)
    n = ocfg["samples_per_prompt"]
    parts = [(test_part(pd.read_parquet(eval_path)), Path(out_path), "test")]
    if train_out is not None:
        train_prompts = train.drop_duplicates("prompt_id")[["prompt_id", "prompt"]]
        count = min(ocfg["train_prompts"], len(train_prompts))
        parts.append((train_prompts.sample(n=count, random_state=ocfg["seed"]), Path(train_out), "training"))
    run_cfg = config_lib.for_model(cfg, model_name)
    for index, (prompts, path, kind) in enumerate(parts):
        partial = path.with_name(path.name + ".partial")
        desc = f"{n} reference samples per {kind} prompt ({model_name})"
        rows = _draw(cfg, model_name, generator, prompts, n, partial, index, desc)
        ref_logp = logprobs.score_sampled(
            generator.model,  # the transformers backend (the synthetic world runs on it)
            generator.tokenizer,
            run_cfg["models"][model_name]["arch"],
            rows,
            run_cfg["train"]["batch_size"] * 4,
            f"reference log-probs of its samples ({model_name})",
        )
        rewards = np.array([synthetic.reward(r["prompt"], r["generation"]) for r in rows])
        io.write_jsonl(
            path,
            (
                row | {"reward_raw": float(raw), "reward": (float(raw) - mean) / std, "ref_logp": float(logp)}
                for row, raw, logp in zip(rows, rewards, ref_logp)
            ),
        )
        partial.unlink()
    return {
        "prompts": len(parts[0][0]),
        "samples_per_prompt": n,
        "train_reward_mean": mean,
        "train_reward_std": std,
    }


def sample_reference_rewards(cfg: dict, model_name: str, model_dir, train_path, out_path) -> dict:
    """objective.qrpo.ref_samples completions per training prompt from the reference, each with its true reward
    (raw and on the training table's standardised scale, the one the quantile compares the training rewards on)."""
    qcfg = cfg["objective"]["qrpo"]
    train = pd.read_parquet(train_path)
    mean, std = reward_scale(train)
    gcfg = generation.plain_sampling(cfg["generate"], cfg["generate"]["max_new_tokens"])
    generator = generation.make_generator(cfg, model_name, model_dir, gcfg)
    prompts = train.drop_duplicates("prompt_id")[["prompt_id", "prompt"]].sort_values("prompt_id")
    k, out_path = qcfg["ref_samples"], Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    desc = f"{k} reference samples per training prompt ({model_name})"
    rows = _draw(cfg, model_name, generator, prompts, k, partial, 0, desc, seed=qcfg["seed"])
    raw = np.array([synthetic.reward(r["prompt"], r["generation"]) for r in rows])
    table = pd.DataFrame(
        {
            "prompt_id": [r["prompt_id"] for r in rows],
            "sample": [r["sample"] for r in rows],
            "response": [r["generation"] for r in rows],
            "reward_raw": raw,
            "reward": (raw - mean) / std,
        }
    )
    io.write_parquet(table, out_path)
    partial.unlink()
    return {"prompts": len(prompts), "samples_per_prompt": k, "reward_raw_mean": float(raw.mean())}
