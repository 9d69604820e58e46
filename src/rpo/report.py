"""Tables from the per-run score files (Markdown + CSV), traced to their MLflow runs."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rpo import tracking

METRIC_LABELS = {"rouge_l": "ROUGE-L", "distinct_2": "Distinct-2", "avg_len": "Avg Len"}


def collect(score_paths: list[str]) -> pd.DataFrame:
    records = []
    for path in score_paths:
        summary = json.loads(Path(path).read_text())
        records.append({k: summary[k] for k in ("model", "method", "ablation", "seed", "mlflow_run_id")} | summary["metrics"])
    return pd.DataFrame(records)


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (model, method); `_std` columns hold the spread across seeds."""
    metric_cols = [c for c in METRIC_LABELS if c in scores]
    grouped = scores.groupby(["model", "method"], sort=True)
    table = grouped[metric_cols].mean()
    spread = grouped[metric_cols].std(ddof=1).fillna(0.0).add_suffix("_std")
    table = table.join(spread)
    table["seeds"] = grouped["seed"].nunique()
    return table.reset_index()


def to_markdown(table: pd.DataFrame) -> str:
    metric_cols = [c for c in METRIC_LABELS if c in table]
    header = ["Model", "Method", *(METRIC_LABELS[c] for c in metric_cols), "Seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["model"], row["method"].upper()]
        for col in metric_cols:
            value = f"{row[col]:.4f}" if col != "avg_len" else f"{row[col]:.2f}"
            if row["seeds"] > 1:
                value += f" ± {row[col + '_std']:.4f}"
            cells.append(value)
        cells.append(str(row["seeds"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table2(cfg: dict, score_paths: list[str], out_md, out_csv) -> str:
    scores = collect(score_paths)
    table = summarise(scores)
    title = (f"# Table II (in-domain, config `{cfg['name']}`)\n\nMean over seeds on the held-out prompts "
             "(reference: each prompt's best completion); ± is the standard deviation across seeds.\n\n")
    markdown = title + to_markdown(table)
    Path(out_md).parent.mkdir(parents=True, exist_ok=True)
    Path(out_md).write_text(markdown)
    table.to_csv(out_csv, index=False)
    sidecar = Path(out_md).with_suffix(".runs.json")
    run_ids = scores["mlflow_run_id"].tolist()
    sidecar.write_text(json.dumps({"score_runs": sorted(r for r in run_ids if r),
                                   "score_runs_recorded_offline": sum(not r for r in run_ids)}, indent=2))
    with tracking.run(cfg, "report", Path(out_md).parent, {"table": "table2"}) as run:
        for path in (out_md, out_csv, sidecar):
            run.log_artifact(path)
    return markdown
