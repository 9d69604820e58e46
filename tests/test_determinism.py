"""Two runs of the embedded default (config/tiny.yaml) on one machine give byte-identical table CSVs."""

import filecmp
import json
import subprocess

import yaml
from conftest import BIN, REPO, run_env, write_config


def run_tiny(workdir):
    workdir.mkdir()
    cfg = yaml.safe_load((REPO / "config" / "tiny.yaml").read_text())
    cfg["data"]["dvc"] = False  # no DVC repository in a scratch folder
    path = write_config(workdir / "tiny.yaml", cfg)
    env = run_env() | {"RPO_WARM": "1"}
    cmd = [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(path),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir / "results" / "tiny" / "tables"


def test_two_runs_give_identical_table_csvs(tmp_path):
    first, second = run_tiny(tmp_path / "a"), run_tiny(tmp_path / "b")
    names = sorted(p.name for p in first.glob("*.csv"))
    assert {"table2.csv", "table7.csv", "optimum.csv"} <= set(names)
    match, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    assert not mismatch and not errors, mismatch + errors
    # the optimum's table and Figure 3 are traced to the runs they were made from, like every report
    for sidecar in (first / "optimum.runs.json", first.parent / "figures" / "figure3_frontier.runs.json"):
        assert len(json.loads(sidecar.read_text())["mlflow_run_ids"]) >= 10, sidecar
