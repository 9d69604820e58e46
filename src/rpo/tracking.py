"""MLflow tracking: every training, generation and scoring job is one run, tagged so it can be traced.

Default store: sqlite at results/mlflow.db (relative to the working directory); MLFLOW_TRACKING_URI overrides.
"""
from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from pathlib import Path

DEFAULT_DB = Path("results") / "mlflow.db"
ARTIFACT_ROOT = Path("results") / "mlartifacts"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB.resolve()}"


@functools.cache
def git_commit() -> str:
    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(cfg: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@contextlib.contextmanager
def _store_lock():
    """Serialise creating a sqlite store: MLflow's schema migration is not safe to run twice at once."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment_id(name: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    with _store_lock():
        return _get_or_create_experiment(mlflow, name)


def _get_or_create_experiment(mlflow, name: str) -> str:
    for _ in range(5):  # jobs on other machines may race to create it
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            ARTIFACT_ROOT.mkdir(parents=True, exist_ok=True)
            return mlflow.create_experiment(name, artifact_location=(ARTIFACT_ROOT / name).resolve().as_uri())
        except Exception:  # noqa: BLE001 - lost the race: read it back
            continue
    raise RuntimeError(f"could not create or find MLflow experiment '{name}' at {tracking_uri()}")


@contextlib.contextmanager
def run(cfg: dict, stage: str, cell: dict | None = None, params: dict | None = None, tags: dict | None = None,
        run_id: str | None = None):
    """An MLflow run for one job; `cell` holds the wildcards (model, method, ablation, seed).
    `run_id` reopens an earlier run (a resumed training job continues its own run)."""
    import mlflow

    exp = experiment_id(cfg["mlflow"]["experiment"])
    cell = cell or {}
    tags = {"config": cfg["name"], "rule": stage, "git_commit": git_commit(), **{k: str(v) for k, v in cell.items()},
            **(tags or {})}
    name = "/".join([stage, *(str(cell[k]) for k in ("model", "method", "ablation", "seed") if k in cell)])
    if run_id is not None:
        with mlflow.start_run(run_id=run_id) as active:
            yield active
        return
    with mlflow.start_run(experiment_id=exp, run_name=name, tags=tags) as active:
        if params:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        yield active
