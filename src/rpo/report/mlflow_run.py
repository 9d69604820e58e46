"""One MLflow 'report' run holding every table, figure and sidecar as artifacts, linked to the runs they came from:
each source run gets the tag `<table or figure name> = yes` (tags.table4 = 'yes' in the UI's search box lists the runs
behind Table IV) and `report_run = <the report run's id>`."""

from __future__ import annotations

import json
from pathlib import Path

from rpo import io, tracking
from rpo.io import md5

SOURCE_TAG_VALUE = "yes"


def table_filter(name: str) -> str:
    """The MLflow search filter that lists the runs a table or figure was built from."""
    return f"tags.{name} = '{SOURCE_TAG_VALUE}'"


def log_report_run(cfg: dict, files: list[str], out_json) -> str:
    """One MLflow 'report' run holding every table, figure and sidecar as artifacts, linked to the source runs."""
    files = [Path(f) for f in files]
    sidecars = {
        f.name.removesuffix(".runs.json"): json.loads(f.read_text()) for f in files if f.name.endswith(".runs.json")
    }
    sources = sorted({r for sidecar in sidecars.values() for r in sidecar["mlflow_run_ids"]})
    with tracking.run(cfg, "report", Path(out_json).parent, {"table": "all"}) as run:
        tags = {r: {"report_run": run.run_id} for r in sources}
        for name, sidecar in sidecars.items():
            for r in sidecar["mlflow_run_ids"]:
                tags[r][name] = SOURCE_TAG_VALUE
        linked = run.tag_other_runs(tags)
        for f in files:
            run.log_artifact(f)
        summary = {
            "report_run_id": run.run_id,
            "source_run_ids": sources,
            "filters": {name: table_filter(name) for name in sidecars},
            "artifacts": {str(f): md5(f) for f in files},
        }
        io.write_text(out_json, json.dumps(summary, indent=2))
        run.log_artifact(out_json)
    if linked:
        exp_id = run.client.get_run(run.run_id).info.experiment_id
        print(f"MLflow runs of experiment '{tracking.experiment_name(cfg)}': {tracking.ui_url(exp_id)}")
        for name in sidecars:
            print(f"  {name}: search `{table_filter(name)}`  {tracking.ui_url(exp_id, table_filter(name))}")
    return run.run_id or "recorded offline"
