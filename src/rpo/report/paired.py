"""Paired comparisons over seeds and prompts: the two-way bootstrap, and the table every ranking claim comes from.

A policy's per-prompt values form a [seeds, prompts] matrix (the sampled true reward: each prompt's mean over its
plain samples). Two policies are compared on the same prompts and, where both have several, the same seeds: the
difference matrix d[s, p]. Its mean's interval resamples seeds and prompts independently, with replacement (the
two-way bootstrap: seeds and prompts are both random draws, and every seed sees the same prompts, so the prompt
draw does not average out over seeds). The reference (no training seed) is compared with every seed of the other
side; an ablation run with one seed is compared with the default run of the same seed only, so its interval is the
bootstrap over prompts of that one seed, like the ablation's own (each ablated method against its own default).
A comparison is *resolved* when its 95% interval excludes zero.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from rpo import paper


def resamples(n_seeds: int, n_prompts: int, samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays [samples, n_seeds] and [samples, n_prompts] of a two-way bootstrap."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_seeds, (samples, n_seeds)), rng.integers(0, n_prompts, (samples, n_prompts))


def resampled_means(values: np.ndarray, seed_idx: np.ndarray, prompt_idx: np.ndarray) -> np.ndarray:
    """The mean of a [seeds, prompts] matrix in every resample ([samples])."""
    rows = values[seed_idx]  # [B, S, P]
    return np.take_along_axis(rows, np.broadcast_to(prompt_idx[:, None, :], rows.shape), axis=2).mean((1, 2))


def percentile(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def two_way_ci(values: np.ndarray, samples: int, confidence: float, seed: int) -> tuple[float, float]:
    """Interval of the mean of a [seeds, prompts] matrix, seeds and prompts resampled independently."""
    values = np.atleast_2d(np.asarray(values, float))
    seed_idx, prompt_idx = resamples(*values.shape, samples, seed)
    return percentile(resampled_means(values, seed_idx, prompt_idx), confidence)


def matrices(per_prompt: pd.DataFrame, model: str, split: str, prompts: list | None = None) -> dict:
    """{(method, ablation): (seeds, [seeds, prompts] matrix)} of one model's runs on one split, prompts aligned
    (on `prompts` when given, else the prompts every run has)."""
    mine = per_prompt[(per_prompt["model"] == model) & (per_prompt["split"] == split)]
    if prompts is None:
        sets = [set(g["prompt_id"]) for _, g in mine.groupby(["method", "ablation", "seed"])]
        prompts = sorted(set.intersection(*sets)) if sets else []
    out = {}
    for (method, ablation), runs in mine.groupby(["method", "ablation"], sort=False):
        seeds = sorted(runs["seed"].unique())
        table = runs.pivot_table(index="seed", columns="prompt_id", values="value").reindex(index=seeds)
        out[(method, ablation)] = (seeds, table.reindex(columns=prompts).to_numpy(float))
    return out


def difference(a: tuple, b: tuple, broadcast: bool = False) -> tuple[list, np.ndarray]:
    """d[s, p] = a - b on the seeds both have; with `broadcast` (one side is the reference, which no training seed
    changes) its one row is compared with every seed of the other side."""
    (seeds_a, va), (seeds_b, vb) = a, b
    if broadcast and (len(seeds_a) == 1 or len(seeds_b) == 1):
        return (seeds_b if len(seeds_a) == 1 else seeds_a), va - vb
    shared = [s for s in seeds_a if s in seeds_b]
    return shared, va[[seeds_a.index(s) for s in shared]] - vb[[seeds_b.index(s) for s in shared]]


def comparisons(cfg: dict, runs: dict) -> list[tuple[tuple, tuple]]:
    """Which pairs are compared: every default-ablation policy against the reference and every other one (in the
    config's order), and each ablation's run of a method against that method's default run and the reference."""
    policies = [(m, "default") for m in [paper.REFERENCE, *cfg["methods"]] if (m, "default") in runs]
    pairs = [(a, b) for b, a in itertools.combinations(policies, 2)]
    for ablation in cfg["ablations"]:
        for method in [m for m in cfg["methods"] if (m, ablation) in runs] if ablation != "default" else []:
            pairs += [((method, ablation), b) for b in ((method, "default"), (paper.REFERENCE, "default")) if b in runs]
    return pairs


def paired_rows(cfg: dict, per_prompt: pd.DataFrame, models: list[str]) -> list[dict]:
    """Every comparison on the test and the dev split: mean difference, interval, resolved or not."""
    boot = cfg["score"]["bootstrap"]
    out = []
    for model, split in itertools.product(models, ("test", "dev")):
        runs = matrices(per_prompt, model, split)
        for a, b in comparisons(cfg, runs):
            seeds, diff = difference(runs[a], runs[b], broadcast=paper.REFERENCE in (a[0], b[0]))
            if diff.size == 0 or np.isnan(diff).any():
                continue
            lo, hi = two_way_ci(diff, boot["samples"], boot["confidence"], boot["seed"])
            out.append(
                dict(
                    model=model,
                    split=split,
                    a=a,
                    b=b,
                    value=float(diff.mean()),
                    ci_low=lo,
                    ci_high=hi,
                    resolved=bool(lo > 0 or hi < 0),
                    seeds=len(seeds),
                    prompts=diff.shape[1],
                )
            )
    return out
