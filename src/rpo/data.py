"""Prepare (prompt, response, reward) triplets: held-out evaluation prompts, standardised rewards, manifest."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pandas as pd

from rpo.errors import DataError

PROMPT_COLUMNS = ("prompt", "instruction")


def prompt_id(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:16]


def md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_source(data_cfg: dict) -> tuple[pd.DataFrame, str]:
    """Rows with columns prompt, response, reward_raw; and a description of where they came from."""
    source = data_cfg["source"]
    if source == "synthetic":
        from rpo import synthetic

        syn = data_cfg["synthetic"]
        rows = synthetic.dataset(syn["n_prompts"], syn["responses_per_prompt"], syn["seed"])
        return pd.DataFrame(rows).rename(columns={"reward": "reward_raw"}), f"synthetic(seed={syn['seed']})"
    path = data_cfg["path"]
    if not path:
        raise DataError(f"config key 'data.path': source '{source}' needs a file path")
    if not Path(path).exists():
        raise DataError(f"{path}: data file not found")
    frame = pd.read_json(path, lines=True) if source == "jsonl" else pd.read_parquet(path)
    return _normalise_columns(frame, path), str(path)


def _normalise_columns(frame: pd.DataFrame, path: str) -> pd.DataFrame:
    prompt_col = next((c for c in PROMPT_COLUMNS if c in frame.columns), None)
    missing = [name for name, ok in [("prompt|instruction", prompt_col), ("response", "response" in frame), ("reward", "reward" in frame)] if not ok]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; have {list(frame.columns)}")
    frame = frame.rename(columns={prompt_col: "prompt", "reward": "reward_raw"})[["prompt", "response", "reward_raw"]]
    rewards = pd.to_numeric(frame["reward_raw"], errors="coerce")
    for row, value in enumerate(rewards):
        if value is None or not math.isfinite(value):
            raise DataError(f"{path}: row {row} field 'reward': not a finite number ({frame['reward_raw'].iloc[row]!r})")
    for field in ("prompt", "response"):
        for row, text in enumerate(frame[field]):
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{path}: row {row} field '{field}': empty or not text")
    return frame.assign(reward_raw=rewards.astype(float))


def split(frame: pd.DataFrame, n_eval: int, min_reward: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out n_eval prompts that have a completion with reward >= min_reward; keep their best one."""
    best = frame.loc[frame.groupby("prompt_id")["reward_raw"].idxmax()]
    eligible = best[best["reward_raw"] >= min_reward]
    if len(eligible) < n_eval:
        raise DataError(
            f"config key 'data.n_eval_prompts': asked for {n_eval} held-out prompts, only {len(eligible)} "
            f"have a completion with reward >= {min_reward} (data.eval_min_reward)"
        )
    held_out = eligible.sample(n=n_eval, random_state=seed).sort_values("prompt_id")
    train = frame[~frame["prompt_id"].isin(held_out["prompt_id"])]
    return train.reset_index(drop=True), held_out.reset_index(drop=True)


def prepare(cfg: dict, out_dir: str | Path) -> dict:
    data_cfg = cfg["data"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame, origin = load_source(data_cfg)
    frame.insert(0, "prompt_id", frame["prompt"].map(prompt_id))
    train, held_out = split(frame, data_cfg["n_eval_prompts"], data_cfg["eval_min_reward"], data_cfg["split_seed"])

    mean, std = float(train["reward_raw"].mean()), float(train["reward_raw"].std(ddof=0))
    if not data_cfg["standardize_rewards"]:
        mean, std = 0.0, 1.0
    std = std if std > 0 else 1.0
    outputs = {}
    for name, part in (("train", train), ("eval", held_out)):
        part = part.assign(reward=(part["reward_raw"] - mean) / std, split=name)
        path = out_dir / f"{name}.parquet"
        part.to_parquet(path, index=False)
        outputs[name] = path
    manifest = {
        "source": origin,
        "rows": {"train": len(train), "eval": len(held_out)},
        "prompts": {"train": int(train["prompt_id"].nunique()), "eval": int(held_out["prompt_id"].nunique())},
        "reward_standardisation": {"mean": mean, "std": std},
        "md5": {name: md5(path) for name, path in outputs.items()},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
