"""The per-run files a report is made from (scores, win rates, OOD scores, training summaries, KL curves), read into
tidy frames, and their aggregation across seeds.

Across seeds a cell is the mean of the per-seed values; its interval counts the variance between seeds and the
variance from which prompts were drawn (across_seeds), or, for one seed, is that seed's bootstrap interval over
prompts. Per-prompt comparisons use the two-way bootstrap of rpo.report.paired.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from rpo.data.prepare import split_of
from rpo.errors import DataError
from rpo.io import md5

OOD_SCORES = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose", "exact_match")


# Where a per-run file holds numbers a table prints: each must be a finite number (OOD scores: or null, for a
# benchmark a score does not apply to). A win rate is NaN only when its judge gave no verdict (n = 0).
NUMERIC_SECTIONS = {"scores.json": ("n", "metrics", "ci", "sampled", "dev"), "ood_scores.json": ("benchmarks",)}


def read_result(path: Path) -> dict:
    """A per-run JSON result, refused by file and key when it is cut short, not an object, or holds a value a table
    would print as '-' or 'inf' (NaN, Infinity, a string where a number belongs)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); rerun the step that writes it") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: not a JSON object; rerun the step that writes it")
    for section in NUMERIC_SECTIONS.get(path.name, ()):
        if section in record:
            _check_numbers(record[section], path, section, allow_null=path.name == "ood_scores.json")
    if "_rpo_vs_" in path.name:
        for baseline, rates in _win_rate_entries(record):
            if rates.get("n"):
                _check_numbers({k: rates.get(k) for k in ("win", "tie", "loss", "win_ci")}, path, baseline)
    return record


def _win_rate_entries(record: dict):
    for baseline, rates in (record.get("in_domain") or {}).items():
        yield f"in_domain.{baseline}", rates
    for bench, by_baseline in (record.get("ood") or {}).items():
        for baseline, rates in by_baseline.items():
            yield f"ood.{bench}.{baseline}", rates


def _check_numbers(node, path: Path, key: str, allow_null: bool = False) -> None:
    if isinstance(node, dict):
        for name, child in node.items():
            _check_numbers(child, path, f"{key}.{name}", allow_null)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _check_numbers(child, path, f"{key}.{index}", allow_null)
    elif node is None and allow_null:
        return
    elif isinstance(node, bool) or not isinstance(node, (int, float)):
        raise DataError(f"{path}: key '{key}': {node!r:.40} is not a number")
    elif not math.isfinite(node):
        raise DataError(f"{path}: key '{key}': {node} is not a finite number; rerun the step that writes it")


def per_example(scores_path: Path, scores: dict) -> pd.DataFrame:
    """The per-prompt scores beside a scores.json, refused by file when cut short or not the ones it summarises
    (one row per test and dev prompt it counted)."""
    path = scores_path.with_name("scores_per_example.jsonl")
    try:
        frame = pd.read_json(path, lines=True)
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON lines ({exc}); rerun the score step") from None
    expected = scores.get("n", 0) + (scores.get("dev") or {}).get("n", 0)
    if len(frame) != expected:
        raise DataError(f"{path}: {len(frame)} rows, but {scores_path} counts {expected} prompts; rerun the score step")
    return frame


class Inputs:
    """The per-run files a report is made from, sorted by kind; remembers their MLflow run ids and md5s."""

    def __init__(self, paths: list[str]):
        self.paths = [Path(p) for p in paths]
        self.run_ids: set[str] = set()
        self.offline = 0
        self._zero: pd.DataFrame | None = None  # target_zero_share, read once

    def _read(self, path: Path) -> dict:
        record = read_result(path)
        if record.get("mlflow_run_id"):
            self.run_ids.add(record["mlflow_run_id"])
        else:
            self.offline += 1
        return record

    def of(self, name: str) -> list[Path]:
        return [p for p in self.paths if p.name == name]

    def scores(self) -> pd.DataFrame:
        """One row per run and metric; the sampled evaluation's metrics are named `sampled:<metric>`."""
        rows = []
        for path in self.of("scores.json"):
            s = self._read(path)
            cell = dict(model=s["model"], method=s["method"], ablation=s["ablation"], seed=s["seed"])
            parts = [("", s["metrics"], s.get("ci", {}))]
            if s.get("sampled"):
                parts.append(("sampled:", s["sampled"]["metrics"], s["sampled"]["ci"]))
            for prefix, values, cis in parts:
                for metric, value in values.items():
                    lo, hi = cis.get(metric, (math.nan, math.nan))
                    rows.append(cell | dict(metric=prefix + metric, value=value, ci_low=lo, ci_high=hi))
        return pd.DataFrame(
            rows, columns=["model", "method", "ablation", "seed", "metric", "value", "ci_low", "ci_high"]
        )

    def per_prompt(self, metric: str) -> pd.DataFrame:
        """Each run's per-prompt values of a metric (`sampled_<metric>`: the per-prompt mean over its samples), from
        the scores_per_example.jsonl beside each scores.json; `split` says test or dev."""
        frames = []
        for path in self.of("scores.json"):
            s = self._read(path)
            frame = per_example(path, s)
            if metric in frame:
                frame = frame.assign(split=frame["split"].map(split_of) if "split" in frame else "test")
                frames.append(
                    frame[["prompt_id", "split", metric]]
                    .rename(columns={metric: "value"})
                    .assign(model=s["model"], method=s["method"], ablation=s["ablation"], seed=s["seed"])
                )
        columns = ["prompt_id", "split", "value", "model", "method", "ablation", "seed"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)

    def reference_samples(self) -> pd.DataFrame:
        """The reference's scored samples per held-out prompt (rpo reference-samples), every model's."""
        frames = [pd.read_json(path, lines=True) for path in self.of("optimum_samples.jsonl")]
        return (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["model", "prompt_id", "sample", "reward_raw", "reward"])
        )

    def train_samples(self) -> pd.DataFrame:
        """The reference's scored samples per training prompt of the diagnosis, every model's."""
        frames = [
            pd.read_json(path, lines=True) for path in self.of("optimum_train_samples.jsonl") if path.stat().st_size
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def target_zero_share(self) -> pd.DataFrame:
        """Per run, the share of training prompts on which its objective's target is identically zero (train.json)."""
        if self._zero is not None:
            return self._zero
        rows = []
        for path in self.of("train.json"):
            t = self._read(path)
            rows.append({k: t.get(k) for k in ("model", "method", "ablation", "seed", "target_zero_share")})
        self._zero = pd.DataFrame(rows, columns=["model", "method", "ablation", "seed", "target_zero_share"])
        return self._zero

    def diagnoses(self) -> list[dict]:
        return [self._read(path) for path in self.of("diagnosis.json")]

    def winrates(self) -> pd.DataFrame:
        rows = []
        for path in [p for p in self.paths if "_rpo_vs_" in p.name]:
            w = self._read(path)
            scopes = [("in_domain", w["in_domain"])] + [(bench, by) for bench, by in w["ood"].items()]
            for scope, by_baseline in scopes:
                for baseline, r in by_baseline.items():
                    rows.append(
                        dict(
                            model=w["model"],
                            ablation=w["ablation"],
                            seed=w["seed"],
                            judge=w["judge"],
                            scope=scope,
                            baseline=baseline,
                            value=r["win"],
                            tie=r["tie"],
                            loss=r["loss"],
                            ci_low=r["win_ci"][0],
                            ci_high=r["win_ci"][1],
                            invalid=r.get("invalid", 0),
                        )
                    )
        return pd.DataFrame(
            rows,
            columns=[
                "model",
                "ablation",
                "seed",
                "judge",
                "scope",
                "baseline",
                "value",
                "tie",
                "loss",
                "ci_low",
                "ci_high",
                "invalid",
            ],
        )

    def ood_scores(self) -> pd.DataFrame:
        rows = []
        for path in self.of("ood_scores.json"):
            s = self._read(path)
            for bench, scores in s["benchmarks"].items():
                for key, value in scores.items():
                    if key in OOD_SCORES and value is not None:
                        rows.append(
                            dict(
                                model=s["model"],
                                method=s["method"],
                                seed=s["seed"],
                                metric=f"{bench}:{key}",
                                value=value,
                                ci_low=math.nan,
                                ci_high=math.nan,
                            )
                        )
        return pd.DataFrame(rows, columns=["model", "method", "seed", "metric", "value", "ci_low", "ci_high"])

    def training(self) -> pd.DataFrame:
        rows = []
        for path in self.of("train.json"):
            t = self._read(path)
            rows.append(
                dict(
                    model=t["model"],
                    method=t["method"],
                    ablation=t["ablation"],
                    seed=t["seed"],
                    hours=t["wall_time_s"] / 3600,
                    folder=str(path.parent),
                )
            )
        return pd.DataFrame(rows)

    def kl(self) -> pd.DataFrame:
        """Every run's KL curve; each row carries its run's model, method, ablation and seed (train.py writes them)."""
        frames = [pd.read_csv(path) for path in self.of("kl.csv")]
        return (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame(columns=["step", "kl", "model", "method", "ablation", "seed"])
        )

    def sidecar(self, out_prefix: Path, kind: str) -> dict:
        return {
            kind: out_prefix.name,
            "mlflow_run_ids": sorted(self.run_ids),
            "runs_recorded_offline": self.offline,
            "inputs": {str(p): md5(p) for p in self.paths},
        }


def degenerate_note(share: float | None) -> str:
    """The mark of a run whose regression target is identically zero on some of its training prompts."""
    return f" [V_hat = r on {100 * share:.0f}% of prompts: target 0]" if share else ""


def zero_share(inputs: Inputs, model: str, method: str, ablation: str) -> float | None:
    """The largest share over a cell's seeds of training prompts where its target is identically zero."""
    frame = inputs.target_zero_share()
    mine = frame[(frame["model"] == model) & (frame["method"] == method) & (frame["ablation"] == ablation)]
    values = mine["target_zero_share"].dropna()
    return float(values.max()) if len(values) else None


def across_seeds(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over seeds. Its interval, with several seeds, counts both sources of variance: between seeds
    (var of the seed values / S) and which prompts were drawn (the mean over seeds of each seed's squared bootstrap
    standard error, not divided by S since every seed is evaluated on the same prompts): mean +- z * sqrt(sum).
    Without per-seed intervals, the t-interval across seeds; with one seed, that seed's interval."""
    out = []
    for key, group in frame.groupby(keys, sort=False):
        values = group["value"].to_numpy(dtype=float)
        n = len(values)
        mean = float(values.mean())
        if n >= 2:
            widths = (group["ci_high"] - group["ci_low"]).to_numpy(dtype=float)
            if np.isfinite(widths).all():
                z = stats.norm.ppf(0.975)
                half = z * math.sqrt(values.var(ddof=1) / n + float(np.mean((widths / (2 * z)) ** 2)))
            else:
                half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
            lo, hi = mean - half, mean + half
        else:
            lo, hi = float(group["ci_low"].iloc[0]), float(group["ci_high"].iloc[0])
        out.append(
            dict(zip(keys, key if isinstance(key, tuple) else (key,)))
            | dict(value=mean, ci_low=lo, ci_high=hi, seeds=n)
        )
    return pd.DataFrame(out, columns=[*keys, "value", "ci_low", "ci_high", "seeds"])


def win_rate_cells(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Win rates across seeds, the interval clipped to [0, 100] (a t-interval over few seeds can overshoot)."""
    cells = across_seeds(frame, keys)
    cells[["ci_low", "ci_high"]] = cells[["ci_low", "ci_high"]].clip(0.0, 100.0)
    return cells
