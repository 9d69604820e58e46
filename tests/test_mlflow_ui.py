"""The MLflow UI as a user opens it, in headless Chromium (Debian's `chromium`; skipped where it is absent): the URL
`rpo runs` prints lands on the runs table of the config's experiment, with each training run's dataset."""

import shutil
import subprocess

import pandas as pd
import pytest
from mlflow_server import mlflow_server, rest

from rpo import tracking

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(url: str, *args) -> str:
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=20000",
            "--window-size=1400,900",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return out.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium)")
def test_the_printed_url_opens_on_the_runs_table_with_datasets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    table = tmp_path / "data" / "train.parquet"
    table.parent.mkdir()
    pd.DataFrame({"prompt": ["p"], "response": ["r"], "reward": [1.0]}).to_parquet(table)
    cfg = {"name": "uicheck", "mlflow": {"experiment": None}}
    for method in ("sft", "rpo"):
        cell = {"model": "llama-tiny", "method": method, "ablation": "default", "seed": 0}
        with tracking.run(cfg, "train", tmp_path / method, cell) as run:
            run.log_input(table, "training")
            run.log_metrics({"final_loss": 0.5})
    with mlflow_server(store) as url:
        experiment = rest(url, "experiments/get-by-name", query="?experiment_name=rpo-pipeline/uicheck")["experiment"]
        page = tracking.ui_url(experiment["experiment_id"], host=url)
        dom = _chromium(page, "--dump-dom")
        _chromium(page, f"--screenshot={tmp_path / 'runs.png'}")
    assert "Training runs" in dom  # the runs table, not the GenAI overview the bare experiment URL opens on
    assert "train/llama-tiny/sft/default/0" in dom and "train/llama-tiny/rpo/default/0" in dom
    assert "data/train" in dom  # the Dataset column
    assert (tmp_path / "runs.png").stat().st_size > 20_000
