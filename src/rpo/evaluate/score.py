"""Score one run's generations against the held-out references, with bootstrap confidence intervals."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from rpo import io, resources, tracking
from rpo.data import synthetic
from rpo.data.prepare import split_of
from rpo.errors import DataError
from rpo.evaluate import metrics, ood
from rpo.io import read_jsonl


def sampled_metrics(cfg: dict) -> list[str]:
    """The metrics of the sampled evaluation: score.sampled_metrics (null: every one of score.metrics)."""
    chosen = cfg["score"]["sampled_metrics"]
    return list(cfg["score"]["metrics"]) if chosen is None else [m for m in cfg["score"]["metrics"] if m in chosen]


def per_example_scores(
    cfg: dict, generations: list[str], references: list[str], prompts: list[str], wanted=None
) -> dict:
    """Every per-example metric the config asks for (or those in `wanted`), as {name: list of floats}."""
    scfg, wanted = cfg["score"], cfg["score"]["metrics"] if wanted is None else wanted
    out = {}
    if "bertscore" in wanted:
        bcfg = scfg["bertscore"]
        model = resources.resolve(bcfg["model"], "score.bertscore.model")
        out["bertscore"] = metrics.bertscore_f1(generations, references, model, bcfg["num_layers"], bcfg["batch_size"])
    if "rouge_l" in wanted:
        out["rouge_l"] = metrics.rouge_l(generations, references)
    if "toxicity" in wanted:
        tcfg = scfg["toxicity"]
        out["toxicity"] = metrics.toxicity(
            generations, tcfg["backend"], tcfg["model"], tcfg["toxic_label"], tcfg["batch_size"]
        )
    if "avg_len" in wanted:
        out["avg_len"] = [float(n) for n in metrics.lengths(generations)]
    if "true_reward" in wanted:
        out["true_reward"] = [synthetic.reward(p, g) for p, g in zip(prompts, generations)]
    if "constraint_accuracy" in wanted:
        out["constraint_accuracy"] = [synthetic.constraint_accuracy(p, g) for p, g in zip(prompts, generations)]
    return out


def summarise(cfg: dict, per_example: dict, generations: list[str]) -> tuple[dict, dict]:
    """Point estimates and percentile-bootstrap CIs (resampling prompts; Distinct-2 recomputed per resample)."""
    boot = cfg["score"]["bootstrap"]
    ci_args = dict(samples=boot["samples"], confidence=boot["confidence"], seed=boot["seed"])
    values, cis = {}, {}
    for name in cfg["score"]["metrics"]:
        if name == "distinct_2":
            values[name] = metrics.distinct_2(generations)
            # A prompt drawn twice counts once (duplicated text would read as repetition), so a resample holds ~63% of
            # the prompts and its Distinct-2 is biased up: the interval is shifted back by that bias.
            cis[name] = metrics.bootstrap_ci(
                metrics.distinct_2_of_groups([[g] for g in generations]),
                len(generations),
                **ci_args,
                point=values[name],
            )
        else:
            values[name] = float(np.mean(per_example[name])) if per_example[name] else float("nan")
            cis[name] = metrics.mean_ci(per_example[name], **ci_args)
    return values, cis


def sampled_summary(cfg: dict, samples: list[dict]) -> tuple[dict, dict, dict]:
    """Metrics of k samples per prompt: each prompt's mean over its samples, then the mean over prompts with a
    bootstrap interval over prompts (Distinct-2: over all samples, its interval resampling prompts).
    Returns values, intervals and {metric: {prompt_id: per-prompt mean}}."""
    generations = [r["generation"] for r in samples]
    wanted = sampled_metrics(cfg)
    per_example = per_example_scores(
        cfg, generations, [r["reference"] for r in samples], [r["prompt"] for r in samples], wanted
    )
    prompt_ids = list(dict.fromkeys(r["prompt_id"] for r in samples))
    rows_of = {p: [] for p in prompt_ids}
    for i, r in enumerate(samples):
        rows_of[r["prompt_id"]].append(i)
    boot = cfg["score"]["bootstrap"]
    ci_args = dict(samples=boot["samples"], confidence=boot["confidence"], seed=boot["seed"])
    values, cis, per_prompt = {}, {}, {}
    for name in wanted:
        if name == "distinct_2":
            values[name] = metrics.distinct_2(generations)
            cis[name] = metrics.bootstrap_ci(
                metrics.distinct_2_of_groups([[generations[i] for i in rows_of[p]] for p in prompt_ids]),
                len(prompt_ids),
                **ci_args,
                point=values[name],
            )
            continue
        per_prompt[name] = {p: float(np.mean([per_example[name][i] for i in rows_of[p]])) for p in prompt_ids}
        means = list(per_prompt[name].values())
        values[name] = float(np.mean(means)) if means else float("nan")
        cis[name] = metrics.mean_ci(means, **ci_args)
    return values, cis, per_prompt


def _split(rows: list[dict], name: str) -> list[dict]:
    return [r for r in rows if split_of(r.get("split")) == name]


def check_complete(rows: list[dict], path, prompt_ids: list, per_prompt: int = 1) -> None:
    """Refuse, by file, generations that miss a prompt or a sample (a file cut short at a line boundary reads as
    valid JSONL) or hold one twice."""
    counts, expected = Counter(row.get("prompt_id") for row in rows), set(prompt_ids)
    missing = [p for p in prompt_ids if counts[p] < per_prompt]
    extra = [p for p, n in counts.items() if p not in expected or n > per_prompt]
    if missing or extra:
        what = f"{len(missing)} of {len(prompt_ids)} prompts short of {per_prompt} row(s) (first: {missing[:1]})"
        if extra:
            what = f"{len(extra)} prompts with rows that do not belong (first: {extra[:1]})"
        raise DataError(f"{path}: incomplete or stale generations: {what}; rerun its generate step")


def score(cfg: dict, cell: dict, generations_path, out_path, samples_path=None, eval_path=None) -> dict:
    """Metrics of the configured decoding (one generation per prompt) and, given `samples_path`, of the sampled
    evaluation (per-prompt means over k samples), on the test split; the dev split's under `dev`. Per prompt in
    scores_per_example.jsonl (sampled: `sampled_*`), with each prompt's split. Given `eval_path`, the generations
    (and samples) must cover each of its prompts exactly once (k times)."""
    all_rows = read_jsonl(generations_path)
    all_samples = read_jsonl(samples_path) if samples_path else []
    if eval_path is not None:
        prompt_ids = pd.read_parquet(eval_path, columns=["prompt_id"])["prompt_id"].tolist()
        check_complete(all_rows, generations_path, prompt_ids)
        if samples_path:
            check_complete(all_samples, samples_path, prompt_ids, cfg["generate"]["samples_per_prompt"])
    parts = {}
    for name in ("test", "dev"):
        rows, samples = _split(all_rows, name), _split(all_samples, name)
        if not rows:
            continue
        generations = [r["generation"] for r in rows]
        per_example = per_example_scores(cfg, generations, [r["reference"] for r in rows], [r["prompt"] for r in rows])
        parts[name] = (
            rows,
            per_example,
            *summarise(cfg, per_example, generations),
            samples,
            sampled_summary(cfg, samples) if samples else None,
        )
    per_example_path = Path(out_path).with_name("scores_per_example.jsonl")

    def records():
        for name, (rows, per_example, _, _, _, sampled) in parts.items():
            for i, row in enumerate(rows):
                record = {"prompt_id": row["prompt_id"], "split": name, **{k: v[i] for k, v in per_example.items()}}
                if sampled:
                    record |= {f"sampled_{k}": v.get(row["prompt_id"], math.nan) for k, v in sampled[2].items()}
                yield record

    io.write_jsonl(per_example_path, records())

    def summary_of(name: str) -> dict:
        rows, _, values, cis, samples, sampled = parts[name]
        out = {"n": len(rows), "metrics": values, "ci": {k: list(v) for k, v in cis.items()}}
        if sampled:
            out["sampled"] = {
                "samples_per_prompt": len(samples) // max(len(rows), 1),
                "metrics": sampled[0],
                "ci": {k: list(v) for k, v in sampled[1].items()},
            }
        return out

    test = summary_of("test")
    with tracking.run(cfg, "score", Path(out_path).parent, cell) as run:
        run.log_input(generations_path, "evaluation")
        run.log_metrics(test["metrics"])
        run.log_metrics(
            {f"{k}_ci_low": v[0] for k, v in test["ci"].items()} | {f"{k}_ci_high": v[1] for k, v in test["ci"].items()}
        )
        summary = {
            **cell,
            "split": "test",
            **test,
            "confidence": cfg["score"]["bootstrap"]["confidence"],
            "mlflow_run_id": run.run_id,
        }
        if "sampled" in test:
            run.log_metrics({f"sampled_{k}": v for k, v in test["sampled"]["metrics"].items()})
        if "dev" in parts:
            summary["dev"] = summary_of("dev")
            run.log_metrics({f"dev_{k}": v for k, v in summary["dev"]["metrics"].items()})
        io.write_text(out_path, json.dumps(summary, indent=2))
        run.log_artifact(out_path)
        run.log_artifact(per_example_path)
    return summary


def score_ood(cfg: dict, cell: dict, generations_path, out_path) -> dict:
    """Programmatic OOD scores: IFEval strict/loose accuracy, GSM8K exact match, length per benchmark."""
    result = ood.score(cfg["ood"]["benchmarks"], read_jsonl(generations_path))
    with tracking.run(cfg, "score_ood", Path(out_path).parent, cell) as run:
        run.log_metrics(
            {
                f"{bench}_{k}": v
                for bench, scores in result.items()
                for k, v in scores.items()
                if isinstance(v, (int, float)) and v is not None
            }
        )
        summary = {**cell, "benchmarks": result, "mlflow_run_id": run.run_id}
        io.write_text(out_path, json.dumps(summary, indent=2))
        run.log_artifact(out_path)
    return summary
