"""Prepare the training and held-out tables: checked rows, held-out prompts, standardised rewards, manifest,
rejects."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from rpo import io
from rpo.data import sources
from rpo.errors import DataError
from rpo.io import md5

COLUMNS = ["row", "prompt_id", "prompt", "response", "reward_raw", "reward", "split"]


def prompt_id(prompt: str) -> str:
    """Stable across runs and machines: the first 16 hex digits of the prompt's SHA-1."""
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:16]


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame({"prompt": [r["prompt"] for r in rows], "response": [r["response"] for r in rows],
                          "reward_raw": np.array([r["reward_raw"] for r in rows], dtype=float)})
    ids = {p: prompt_id(p) for p in frame["prompt"].unique()}
    frame.insert(0, "prompt_id", frame["prompt"].map(ids))
    return frame


def held_out(frame: pd.DataFrame, n_eval: int, min_reward: float, fallback: str, seed: int) -> pd.DataFrame:
    """n_eval prompts, each with its best completion. A prompt qualifies when that completion reaches
    min_reward; with fallback 'best', prompts below it fill up what is missing."""
    best = frame.loc[frame.groupby("prompt_id", sort=True)["reward_raw"].idxmax()]
    eligible = best[best["reward_raw"] >= min_reward]
    if len(eligible) >= n_eval:
        return eligible.sample(n=n_eval, random_state=seed).sort_values("prompt_id")
    if fallback == "best" and len(best) >= n_eval:
        rest = best.drop(eligible.index).sample(n=n_eval - len(eligible), random_state=seed)
        return pd.concat([eligible, rest]).sort_values("prompt_id")
    raise DataError(
        f"config key 'data.n_eval_prompts': asked for {n_eval} held-out prompts, only {len(eligible)} of {len(best)} "
        f"have a completion with reward >= {min_reward} (data.eval_min_reward; data.eval_fallback: best takes others too)"
    )


def split_of(value) -> str:
    """A held-out row's split: 'dev', else 'test' (tables prepared before the dev split said 'eval')."""
    return "dev" if value == "dev" else "test"


def test_part(table: pd.DataFrame) -> pd.DataFrame:
    """The held-out rows of the test split."""
    return table[table["split"].map(split_of) == "test"] if "split" in table else table


def dev_test_split(prompt_ids: pd.Series, n_dev: int, seed: int) -> np.ndarray:
    """'dev' for n_dev of the held-out prompts (drawn with the split seed), 'test' for the rest: settings are chosen
    on dev, results reported on test."""
    if n_dev >= len(prompt_ids):
        raise DataError(f"config key 'data.n_dev_prompts': {n_dev} dev prompts leave none of the {len(prompt_ids)} "
                        "held-out prompts for the test split")
    split = np.full(len(prompt_ids), "test", dtype=object)
    split[np.random.default_rng(seed).choice(len(prompt_ids), size=n_dev, replace=False)] = "dev"
    return split


def _variants(prompts: pd.Series) -> int:
    """How many prompts have another spelling in the data that is the same prompt (sources.identity)."""
    distinct = pd.Series(prompts.unique())
    return int(distinct.map(sources.identity).duplicated(keep=False).sum())


def _checked(data_cfg: dict, out_dir: Path, name: str):
    rows, origin, input_md5 = sources.load_rows(data_cfg)
    rows.rejected.sort(key=sources.order)  # file order
    rejects = out_dir / f"rejects{name}.jsonl"
    io.write_jsonl(rejects, rows.rejected)
    if rows.rejected and data_cfg["on_bad_rows"] == "error":
        first = rows.rejected[0]
        raise DataError(f"{sources.describe(first)} field '{first['field']}': {first['reason']} ({len(rows.rejected)} bad row(s) in all, "
                        f"each listed in {rejects}; data.on_bad_rows: drop drops them)")
    if not rows.kept:
        raise DataError(f"{origin}: no usable rows ({len(rows.rejected)} rejected, listed in {rejects})")
    return _frame(rows.kept), origin, input_md5, rows.rejected, rows.inputs


def prepare(cfg: dict, out_dir: str | Path) -> dict:
    data_cfg = cfg["data"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame, origin, input_md5, rejected, input_rows = _checked(data_cfg, out_dir, "")
    if data_cfg["source"] == "hub" and data_cfg["hub_eval_split"]:
        eval_cfg = {**data_cfg, "hub_split": data_cfg["hub_eval_split"]}
        eval_frame, eval_origin, eval_md5, eval_rejected, eval_inputs = _checked(eval_cfg, out_dir, "_eval")
        origin, input_md5, rejected = f"{origin} + {eval_origin}", {**input_md5, **eval_md5}, rejected + eval_rejected
        input_rows += eval_inputs
    else:
        eval_frame = frame
    evaluation = held_out(eval_frame, data_cfg["n_eval_prompts"], data_cfg["eval_min_reward"], data_cfg["eval_fallback"],
                          data_cfg["split_seed"])
    evaluation = evaluation.assign(split=dev_test_split(evaluation["prompt_id"], data_cfg["n_dev_prompts"],
                                                        data_cfg["split_seed"]))
    # A held-out prompt keeps no training rows, also where a training copy of it differs only by Unicode
    # normalisation or whitespace (a trailing newline, NFD accents).
    held_identity = set(evaluation["prompt"].map(sources.identity))
    frame_identity = frame["prompt"].map(sources.identity)
    near_copies = frame[frame_identity.isin(held_identity) & ~frame["prompt_id"].isin(evaluation["prompt_id"])]
    train = frame[~frame_identity.isin(held_identity)].reset_index(drop=True)
    leaked = int(train["prompt"].map(sources.identity).isin(held_identity).sum())
    if train.empty:
        raise DataError(f"{origin}: every prompt went to the held-out set; lower data.n_eval_prompts")

    mean, std = 0.0, 1.0
    if data_cfg["standardize_rewards"]:
        mean, std = float(train["reward_raw"].mean()), float(train["reward_raw"].std(ddof=0))
        std = std if std > 0 else 1.0  # all rewards equal: centre only (data.reward_range keeps both finite)
    outputs = {}
    for name, part in (("train", train.assign(split="train")), ("eval", evaluation.reset_index(drop=True))):
        part = part.assign(row=np.arange(len(part)), reward=(part["reward_raw"] - mean) / std)[COLUMNS]
        outputs[name] = out_dir / f"{name}.parquet"
        io.write_parquet(part, outputs[name])

    reasons = {}
    for entry in rejected:
        key = entry["reason"].split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    # Every input row is counted once: kept for training, held out (a held-out prompt's best completion), unused
    # (the other completions of held-out prompts), or rejected.
    unused = len(frame) - len(train) + len(eval_frame) - len(evaluation) if eval_frame is not frame else (
        len(frame) - len(train) - len(evaluation))
    manifest = {
        "source": origin,
        "rows": {"train": len(train), "eval": len(evaluation)},
        "accounting": {"input_rows": input_rows, "kept_train": len(train), "kept_eval": len(evaluation),
                       "eval_unused": unused, "rejected": len(rejected)},
        "prompts": {"train": int(train["prompt_id"].nunique()), "eval": int(evaluation["prompt_id"].nunique()),
                    "dev": int((evaluation["split"] == "dev").sum()), "test": int((evaluation["split"] == "test").sum())},
        "leakage": {"held_out_prompts_in_train": leaked,
                    "train_rows_dropped_as_normalised_copies_of_held_out": len(near_copies),
                    "prompts_differing_only_by_normalisation": _variants(pd.concat([frame, eval_frame])["prompt"])},
        "responses_per_prompt": {"train_mean": len(train) / max(train["prompt_id"].nunique(), 1)},
        "reward_raw": {"train_mean": mean, "train_std": std, "min": float(train["reward_raw"].min()),
                       "max": float(train["reward_raw"].max())},
        "rejected": {"total": len(rejected), "by_reason": reasons, "file": str(out_dir / "rejects.jsonl")},
        "md5": {"inputs": input_md5, "outputs": {name: md5(path) for name, path in outputs.items()}},
    }
    counted = sum(v for k, v in manifest["accounting"].items() if k != "input_rows")
    assert counted == input_rows, f"row accounting: {manifest['accounting']}"  # a bug here, never a user's data
    io.write_json(out_dir / "manifest.json", manifest)
    return manifest
