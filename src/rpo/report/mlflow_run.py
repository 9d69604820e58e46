"""One MLflow 'report' run holding every table, figure and sidecar as artifacts, linked to the runs they came from."""

from __future__ import annotations

import json
from pathlib import Path

from rpo import tracking
from rpo.io import md5


def log_report_run(cfg: dict, files: list[str], out_json) -> str:
    """One MLflow 'report' run holding every table, figure and sidecar as artifacts, linked to the source runs."""
    files = [Path(f) for f in files]
    sources = sorted(
        {r for f in files if f.name.endswith(".runs.json") for r in json.loads(f.read_text())["mlflow_run_ids"]}
    )
    with tracking.run(cfg, "report", Path(out_json).parent, {"table": "all"}) as run:
        for f in files:
            run.log_artifact(f)
        summary = {"report_run_id": run.run_id, "source_run_ids": sources, "artifacts": {str(f): md5(f) for f in files}}
        Path(out_json).write_text(json.dumps(summary, indent=2))
        run.log_artifact(out_json)
    return run.run_id or "recorded offline"
