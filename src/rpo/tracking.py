"""MLflow tracking: every training, generation, scoring and report job is one run, tagged so it can be traced.

Default store: sqlite at results/mlflow.db (relative to the working directory); MLFLOW_TRACKING_URI overrides.
When the tracking store cannot be reached, the job goes on and records the run in
<job folder>/mlflow_offline.json; `rpo mlflow-import <folder>` replays it into MLflow later.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rpo import JOB_STARTED, io, paths
from rpo.errors import DataError
from rpo.io import md5
from rpo.redact import redact

DEFAULT_DB = Path("results") / "mlflow.db"
ARTIFACT_ROOT = Path("results") / "mlartifacts"
# One record per job (<folder>/mlflow_offline.<rule>.json): score and score-ood share a run folder.
OFFLINE_GLOB = "mlflow_offline*.json"

# An unreachable server should cost seconds, not MLflow's default minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB.resolve()}"


def shown_uri() -> str:
    """The tracking URI as it may be printed or stored: a password or token in it replaced by ***."""
    return redact(tracking_uri())


@functools.cache
def git_commit() -> str:
    """The commit of the checkout the code runs from (an editable install), else of the working directory
    (where Snakemake runs the workflow); 'unknown' outside git."""
    for folder in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(
                ["git", "-C", str(folder), "rev-parse", "--verify", "-q", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0:
            return out.stdout.strip()
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
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment_name(cfg: dict) -> str:
    """One experiment per config: `rpo-pipeline/<config name>` unless mlflow.experiment names another."""
    return cfg["mlflow"]["experiment"] or f"rpo-pipeline/{cfg['name']}"


def experiment_tags() -> dict:
    """The kind tag that makes MLflow 3's UI treat the experiment as model training (runs, not GenAI traces), and the
    description its header shows."""
    return {
        "mlflow.experimentKind": "custom_model_development",
        "mlflow.note.content": (
            "rpo-pipeline: every job of this config is a run (rule = train, generate, score, judge, report; tags model, "
            "method, ablation, seed). The runs behind a table: tags.<table> = 'yes' (e.g. tags.table4 = 'yes'). "
            "The resolved config: config.yaml in this experiment's artifact location."
        ),
    }


def experiment_id(name: str) -> str:
    import mlflow  # lazy: a node without mlflow records its runs offline (Run.start), and it costs ~1.5 s to import

    mlflow.set_tracking_uri(tracking_uri())
    with _store_lock():
        for _ in range(5):  # jobs on other machines may race to create it
            found = mlflow.get_experiment_by_name(name)
            if found is not None:
                return found.experiment_id
            if not paths.inside(ARTIFACT_ROOT / name, ARTIFACT_ROOT):
                raise ValueError(f"MLflow experiment '{name}' would put its artifacts outside {ARTIFACT_ROOT}/")
            try:
                ARTIFACT_ROOT.mkdir(parents=True, exist_ok=True)
                location = (ARTIFACT_ROOT / name).resolve().as_uri()
                return mlflow.create_experiment(name, artifact_location=location, tags=experiment_tags())
            except Exception:  # noqa: BLE001 - lost the race: read it back
                continue
    raise RuntimeError(f"could not create or find MLflow experiment '{name}' at {shown_uri()}")


def store_config(cfg: dict, resolved_yaml: str) -> str:
    """Create the config's experiment and put its resolved YAML in the experiment's artifact location (a local
    store's folder; other stores keep it in each run's params). Returns the experiment id."""
    import mlflow

    exp_id = experiment_id(experiment_name(cfg))
    location = mlflow.get_experiment(exp_id).artifact_location
    if location.startswith("file://"):
        folder = Path(location.removeprefix("file://"))
        folder.mkdir(parents=True, exist_ok=True)
        io.write_text(folder / "config.yaml", redact(resolved_yaml))
    return exp_id


def ui_url(exp_id: str, search_filter: str | None = None, host: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page of an experiment's runs table (not the GenAI overview it may open on), optionally filtered."""
    from urllib.parse import quote

    url = f"{host}/#/experiments/{exp_id}/runs"
    return url + (f"?searchFilter={quote(search_filter)}" if search_filter else "")


def job_started_ms() -> int | None:
    """When this job's `rpo` process started (ms since the epoch): a run's start, so that its duration in the UI is
    the job's time (imports, loading and the work), not only the logging at its end. None outside `rpo`."""
    try:
        started = float(os.environ[JOB_STARTED])
    except (KeyError, ValueError):
        return None
    return int(started * 1000) if 0 < started <= time.time() else None


class Run:
    """One job's run. Online it writes through to MLflow; once MLflow fails (or never answered) it
    records everything in <folder>/mlflow_offline.json instead, so nothing is lost."""

    def __init__(self, folder: Path, experiment: str, name: str, tags: dict, run_id: str | None = None):
        self.folder, self.run_id, self.client = Path(folder), run_id, None
        self.record = {
            "experiment": experiment,
            "run_name": name,
            "tags": tags,
            "params": {},
            "metrics": [],
            "artifacts": [],
            "mlflow_run_id": run_id,
        }
        self.offline_path = self.folder / offline_file(name)

    def start(self) -> "Run":
        try:
            from mlflow.tracking import MlflowClient

            exp = experiment_id(self.record["experiment"])
            self.client = MlflowClient(tracking_uri())
            if self.run_id is None:
                self.run_id = self.client.create_run(
                    exp, run_name=self.record["run_name"], tags=self.record["tags"], start_time=job_started_ms()
                ).info.run_id
        except Exception as exc:  # noqa: BLE001 - any failure to reach the store
            self._go_offline(exc)
        return self

    @property
    def offline(self) -> bool:
        return self.client is None

    def _go_offline(self, exc: Exception) -> None:
        if "offline_reason" not in self.record:
            print(
                f"MLflow unreachable at {shown_uri()} ({type(exc).__name__}); recording this run in "
                f"{self.offline_path} (replay it with `rpo mlflow-import {self.folder}`)",
                file=sys.stderr,
            )
        self.client = None
        self.record["offline_reason"] = redact(f"{type(exc).__name__}: {exc}")[:500]
        self._write()

    def _write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        io.write_text(self.offline_path, json.dumps(self.record, indent=1))

    def _call(self, online, offline) -> None:
        offline()
        if self.client is not None:
            try:
                online()
                return
            except Exception as exc:  # noqa: BLE001
                self._go_offline(exc)
        self._write()

    def log_params(self, params: dict) -> None:
        params = {k: redact(v)[:500] for k, v in flatten(params).items()}

        def online():  # mlflow is imported only when online: a node without it records offline
            from mlflow.entities import Param

            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

        self._call(online, lambda: self.record["params"].update(params))

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        stamp = int(time.time() * 1000)
        rows = [(k, float(v), step or 0) for k, v in metrics.items()]

        def online():
            from mlflow.entities import Metric

            self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, s) for k, v, s in rows])

        self._call(online, lambda: self.record["metrics"].extend([k, v, s] for k, v, s in rows))

    def log_input(self, path, context: str, digest: str | None = None) -> None:
        """A table the run read, as an MLflow dataset input (the UI's Dataset column): its digest is the file's md5
        (the key DVC stores; pass it when the job has it already), its source the path."""
        self.log_input_record(dataset_record(path, context, digest))

    def log_input_record(self, entry: dict) -> None:
        def online():
            from mlflow.entities import Dataset, DatasetInput, InputTag

            fields = {k: entry[k] for k in ("name", "digest", "source_type", "source", "schema", "profile")}
            tags = [InputTag("mlflow.data.context", entry["context"])]
            self.client.log_inputs(self.run_id, datasets=[DatasetInput(Dataset(**fields), tags)])

        self._call(online, lambda: self.record.setdefault("inputs", []).append(entry))

    def tag_other_runs(self, tags_by_run: dict[str, dict]) -> bool:
        """Set tags on other runs of the store (the runs a table was built from); False when offline."""
        if self.client is None:
            return False
        from mlflow.entities import RunTag

        for run_id, tags in tags_by_run.items():
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        return True

    def log_artifact(self, path) -> None:
        path = str(Path(path).resolve())
        self._call(lambda: self.client.log_artifact(self.run_id, path), lambda: self.record["artifacts"].append(path))

    def end(self, status: str) -> None:
        if self.client is not None:
            try:
                self.client.set_terminated(self.run_id, status)
                return
            except Exception as exc:  # noqa: BLE001
                self._go_offline(exc)
        self.record["status"] = status
        self._write()


@contextlib.contextmanager
def run(
    cfg: dict,
    stage: str,
    folder,
    cell: dict | None = None,
    params: dict | None = None,
    tags: dict | None = None,
    run_id: str | None = None,
):
    """An MLflow run for one job; `cell` holds the wildcards (model, method, ablation, seed), `folder` is
    where the job writes (and where an offline record goes). `run_id` reopens an earlier run."""
    cell = cell or {}
    all_tags = {
        "config": cfg["name"],
        "rule": stage,
        "git_commit": git_commit(),
        **{k: str(v) for k, v in cell.items()},
        **(tags or {}),
    }
    name = "/".join([stage, *(str(cell[k]) for k in ("model", "method", "ablation", "seed") if k in cell)])
    active = Run(folder, experiment_name(cfg), name, all_tags, run_id).start()
    if params and run_id is None:
        active.log_params(params)
    try:
        yield active
    except BaseException:
        active.end("FAILED")
        raise
    active.end("FINISHED")


def dataset_record(path, context: str, digest: str | None = None) -> dict:
    """What MLflow stores of a dataset input, for a Parquet table or any other file (JSONL generations)."""
    path = Path(path)
    schema, profile = None, {}
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        meta = pq.read_metadata(path)
        schema = json.dumps({"columns": meta.schema.names})
        profile = {"num_rows": meta.num_rows}
    source = {"uri": str(path.resolve())}
    for parent in path.resolve().parents:  # the DVC pointer that versions it, if any
        if parent.name and parent.with_suffix(".dvc").is_file():
            source["dvc"] = str(parent.with_suffix(".dvc"))
            break
    return {
        "name": f"{path.parent.name}/{path.stem}",
        "digest": digest or md5(path),
        "source_type": "local",
        "source": json.dumps(source),
        "schema": schema,
        "profile": json.dumps(profile),
        "context": context,
    }


def offline_file(run_name: str) -> str:
    """The offline record of one job: its rule (the run name's first part) in the file name."""
    return f"mlflow_offline.{run_name.split('/')[0]}.json"


def replay(folder) -> list[str]:
    """Import every run recorded offline in `folder` into the current tracking store; returns the new run ids.
    Only artifacts inside the folder are uploaded: a record naming any other file is refused by that file's name."""
    folder = Path(folder)
    records = sorted(p for p in folder.glob(OFFLINE_GLOB) if not p.name.endswith((".imported.json", ".replay.json")))
    if not records:
        raise DataError(f"{folder}: no offline MLflow record here ({OFFLINE_GLOB})")
    return [_replay_one(folder, path) for path in records]


def _replay_one(folder: Path, path: Path) -> str:
    record = json.loads(path.read_text())
    outside = [a for a in record["artifacts"] if not paths.inside(a, folder)]
    if outside:
        raise DataError(f"{path}: lists files outside {folder}/, refused (nothing imported): {', '.join(outside)}")
    active = Run(folder, record["experiment"], record["run_name"], record["tags"]).start()
    if active.offline:
        raise RuntimeError(f"MLflow is still unreachable at {shown_uri()}: {active.record['offline_reason']}")
    active.offline_path = path.with_suffix(".replay.json")  # a failure while replaying must not overwrite the record
    active.log_params(record["params"])
    by_step = {}
    for key, value, step in record["metrics"]:
        by_step.setdefault(step, {})[key] = value
    for step, metrics in sorted(by_step.items()):
        active.log_metrics(metrics, step=step)
    for entry in record.get("inputs", []):
        active.log_input_record(entry)
    for artifact in record["artifacts"]:
        if Path(artifact).exists():
            active.log_artifact(artifact)
    active.end(record.get("status", "FINISHED"))
    path.rename(path.with_suffix(".imported.json"))  # never imported twice
    return active.run_id
