"""MLflow: an unreachable tracking server never stops a job; its run is recorded and imported later."""

import json
import os
import sqlite3
import time

from conftest import write_config

from rpo import tracking
from rpo.cli import main
from rpo.io import md5


def test_unreachable_server_records_the_run_and_import_replays_it(workdir, micro_config, monkeypatch, capsys):
    cfg = write_config(workdir / "micro.yaml", micro_config)
    gens = workdir / "run" / "generations.jsonl"
    gens.parent.mkdir()
    gens.write_text(
        "".join(
            json.dumps(
                {"prompt_id": str(i), "prompt": "p", "reference": "the cat sat on the mat", "generation": "the cat sat"}
            )
            + "\n"
            for i in range(3)
        )
    )
    # nothing listens there; the password in the address must reach no log and no record
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mluser:s3cret-pw@127.0.0.1:9/?token=t0ken")
    start = time.perf_counter()
    cell = ["--model", "llama", "--method", "rpo", "--seed", "0"]
    assert (
        main(
            [
                "score",
                "--config",
                str(cfg),
                *cell,
                "--generations",
                str(gens),
                "--out",
                str(workdir / "run" / "scores.json"),
            ]
        )
        == 0
    )
    assert time.perf_counter() - start < 60
    err = capsys.readouterr().err
    assert "MLflow unreachable at http://***@127.0.0.1:9/?token=***" in err
    scores = json.loads((workdir / "run" / "scores.json").read_text())
    offline = workdir / "run" / tracking.offline_file("score")
    for text in (err, offline.read_text()):
        assert "s3cret-pw" not in text and "t0ken" not in text
    record = json.loads(offline.read_text())
    assert scores["mlflow_run_id"] is None and record["tags"]["rule"] == "score" and record["status"] == "FINISHED"
    logged = {m[0] for m in record["metrics"]}
    assert set(scores["metrics"]) <= logged and {"rouge_l_ci_low", "rouge_l_ci_high"} <= logged

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    assert main(["mlflow-import", str(workdir / "run")]) == 0
    with sqlite3.connect(workdir / "mlflow.db") as con:
        metrics = dict(con.execute("select key, value from metrics").fetchall())
        tags = dict(con.execute("select key, value from tags").fetchall())
        status = con.execute("select status from runs").fetchall()
        digests = [d for (d,) in con.execute("select digest from datasets")]
        experiment, kind = con.execute(
            "select e.name, t.value from experiments e join experiment_tags t on e.experiment_id = t.experiment_id "
            "where t.key = 'mlflow.experimentKind'"
        ).fetchone()
    assert metrics["rouge_l"] == scores["metrics"]["rouge_l"] and tags["rule"] == "score" and tags["model"] == "llama"
    assert status == [("FINISHED",)]
    assert digests == [md5(gens)]  # the dataset input recorded offline, replayed with its md5
    assert (experiment, kind) == ("rpo-pipeline/micro", "custom_model_development")
    assert not offline.exists()  # imported once, never twice


def test_two_jobs_of_one_folder_keep_two_records_and_import_refuses_outside_files(workdir, monkeypatch, capsys):
    """score and score-ood write into one run folder: one offline record each. A record naming a file outside its
    folder (edited, or copied from elsewhere) is refused by that file's name, nothing imported."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    cfg = {"name": "micro", "mlflow": {"experiment": None}}
    folder = workdir / "run"
    for stage in ("score", "score_ood"):
        with tracking.run(cfg, stage, folder, {"model": "m", "seed": 0}) as active:
            active.log_metrics({f"{stage}_metric": 1.0})
    records = sorted(p.name for p in folder.glob("mlflow_offline*.json"))
    assert records == ["mlflow_offline.score.json", "mlflow_offline.score_ood.json"]

    secret = workdir / "elsewhere.txt"
    secret.write_text("not this run's")
    edited = json.loads((folder / records[0]).read_text())
    edited["artifacts"] = [str(folder / "scores.json"), str(folder / ".." / "elsewhere.txt")]
    (folder / records[0]).write_text(json.dumps(edited))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir}/mlflow.db")
    assert main(["mlflow-import", str(folder)]) == 2
    assert "elsewhere.txt" in capsys.readouterr().err

    edited["artifacts"] = []
    (folder / records[0]).write_text(json.dumps(edited))
    assert main(["mlflow-import", str(folder)]) == 0
    with sqlite3.connect(workdir / "mlflow.db") as con:
        rules = sorted(v for (v,) in con.execute("select value from tags where key = 'rule'"))
    assert rules == ["score", "score_ood"]


def test_a_runs_duration_is_its_jobs_time(workdir, micro_config, monkeypatch):
    """The UI showed 56-109 ms for score and judge jobs that take seconds: their runs opened after the work. A run
    now starts when its `rpo` process did (RPO_JOB_STARTED, set by rpo.cli.main and carried into warm children)."""
    from rpo import JOB_STARTED, config

    cfg = config.resolve(micro_config)
    started = time.time() - 3.0
    monkeypatch.setenv(JOB_STARTED, repr(started))
    with tracking.run(cfg, "score", workdir / "run", {"model": "m", "method": "rpo"}) as run:
        pass
    with sqlite3.connect(workdir / "results" / "mlflow.db") as con:
        start, end = con.execute("select start_time, end_time from runs where run_uuid = ?", (run.run_id,)).fetchone()
    assert start == int(started * 1000) and end - start >= 3000
    for unusable in ("not a time", repr(time.time() + 3600)):  # garbage or the future: the run's own start
        monkeypatch.setenv(JOB_STARTED, unusable)
        assert tracking.job_started_ms() is None
    monkeypatch.setattr("sys.argv", ["rpo"])
    monkeypatch.delenv(JOB_STARTED)
    assert main(["config", "--config", str(write_config(workdir / "c.yaml", micro_config))]) == 0
    assert float(os.environ[JOB_STARTED]) <= time.time()
