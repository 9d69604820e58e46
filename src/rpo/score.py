"""Score one run's generations against the held-out references."""
from __future__ import annotations

import json
from pathlib import Path

from rpo import metrics, tracking


def read_generations(path) -> list[dict]:
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON: {exc}") from exc
    return rows


def score(cfg: dict, cell: dict, generations_path, out_path) -> dict:
    rows = read_generations(generations_path)
    generations = [r["generation"] for r in rows]
    references = [r["reference"] for r in rows]
    wanted = cfg["score"]["metrics"]
    result = {}
    if "rouge_l" in wanted:
        per_example = metrics.rouge_l(generations, references)
        result["rouge_l"] = sum(per_example) / len(per_example)
    if "distinct_2" in wanted:
        result["distinct_2"] = metrics.distinct_2(generations)
    if "avg_len" in wanted:
        result["avg_len"] = metrics.avg_length(generations)
    with tracking.run(cfg, "score", Path(out_path).parent, cell) as run:
        run.log_metrics(result)
        summary = {**cell, "n": len(rows), "metrics": result, "mlflow_run_id": run.run_id}
        Path(out_path).write_text(json.dumps(summary, indent=2))
        run.log_artifact(out_path)
    return summary
