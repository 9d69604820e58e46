"""The Snakemake DAG: planning (micro and the paper's full grid), lint, a whole run on the micro config with one
ablation, sidecars traced to MLflow, the HTML report, and reruns limited to what a change or a target needs."""

import json
import re
import shutil
import sqlite3
import subprocess
import time

import pandas as pd
import pytest
from conftest import BIN, REPO, run_env, snakemake, warm_env, write_config
from mlflow_server import mlflow_server, rest

from rpo import config as rpo_config
from rpo.io import md5
from rpo.models import generation
from rpo.report.mlflow_run import table_filter

MICRO_JOBS = {
    "resolve_config": 7,
    "prepare_data": 1,
    "init_model": 2,
    "reference_logprobs": 2,
    "train": 8,
    "generate": 10,  # 8 runs and the 2 references
    "score": 10,
    "generate_ood": 10,
    "score_ood": 10,
    "judge": 14,  # per model: RPO against 3 baselines in-domain and OOD, and against the reference in-domain
    "table2": 1,
    "table3": 1,
    "ablation_table": 4,
    "figure1": 1,
    "figure2": 1,
    "paper_comparison": 1,
    "mlflow_report_run": 1,
    "all": 1,
}
TABLES = ["table2", "table3", "table4", "table5", "table6", "table7"]


def job_counts(output: str) -> dict:
    stats = output.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def test_dry_run_plans_the_expected_jobs(tmp_path, micro_config):
    cfg = write_config(tmp_path / "micro.yaml", micro_config)
    assert job_counts(snakemake(tmp_path, "-n", "--configfile", str(cfg)).stdout) == MICRO_JOBS


def test_the_paper_grid_plans_in_under_five_seconds(tmp_path):
    timings = []
    for _ in range(2):  # the first call also compiles bytecode
        start = time.perf_counter()
        result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / "paper.yaml"))
        timings.append(time.perf_counter() - start)
    counts = job_counts(result.stdout)
    # 6 models x (4 methods + 9 RPO ablations); judges: 2 x 6 x (3 baselines in-domain and OOD, the reference
    # in-domain, 9 ablations vs SFT)
    assert counts["train"] == 6 * (4 + 9) and counts["judge"] == 2 * 6 * (3 + 3 + 1 + 9)
    assert counts["data_variant"] == 6 and counts["ablation_table"] == 4
    assert min(timings) < 5.0, f"planning took {timings}"
    # the released code's overlay plans the same grid, beside it
    overlay = [str(REPO / "config" / "paper.yaml"), str(REPO / "config" / "paper_released.yaml")]
    released = snakemake(tmp_path, "-n", "-p", "--configfile", *overlay)
    assert job_counts(released.stdout) == counts and "results/paper-released/" in released.stdout


def test_ablations_plan_their_data_variants(tmp_path, micro_config):
    micro_config["ablations"] = {
        "default": {},
        "beta5": {"methods": ["rpo"], "objective": {"beta": 5.0}},
        "density0.5": {"methods": ["rpo"], "data": {"density": 0.5}},
        "noise0.1": {"methods": ["rpo", "sft"], "data": {"noise": 0.1}},
    }
    cfg = write_config(tmp_path / "micro.yaml", micro_config)
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(cfg))
    counts = job_counts(result.stdout)
    assert counts["data_variant"] == 2 and counts["train"] == 8 + 2 * (1 + 1 + 2)
    assert "data/prepared/micro/train_density0.5.parquet" in result.stdout
    assert "--train data/prepared/micro/train_noise0.1.parquet" in result.stdout


def test_qrpo_plans_its_reference_rewards_only_where_a_reward_can_score_them(tmp_path, micro_config):
    """QRPO's train and diagnose jobs read each model's scored reference samples (the synthetic world); the other
    methods never do; without a reward model (or ref_samples 0) QRPO uses the prompt's own completions."""
    micro_config["methods"] = ["rpo", "qrpo"]
    micro_config["ablations"] = {"default": {}, "beta5": {"methods": ["rpo", "qrpo"], "objective": {"beta": 5.0}}}
    cfg = write_config(tmp_path / "micro.yaml", micro_config)
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(cfg))
    counts = job_counts(result.stdout)
    assert counts["reference_rewards"] == 2 and counts["train"] == 2 * 2 * 2
    train_commands = [line for line in result.stdout.splitlines() if " train --config" in line]
    with_rewards = [line for line in train_commands if "--ref-rewards results/micro/" in line]
    assert len(with_rewards) == 4 and all("--method qrpo" in line for line in with_rewards)
    assert "reference/qrpo_rewards.parquet" in result.stdout
    micro_config["objective"] = {"qrpo": {"ref_samples": 0}}
    cfg = write_config(tmp_path / "micro.yaml", micro_config)
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(cfg))
    assert "reference_rewards" not in job_counts(result.stdout) and "--ref-rewards" not in result.stdout


def test_lint_is_clean():
    result = snakemake(REPO, "--lint")
    assert "Congratulations" in result.stdout + result.stderr


def test_a_table_target_plans_only_what_it_needs(tmp_path, micro_config):
    micro_config["ablations"] = {"default": {}, "beta5": {"methods": ["rpo"], "objective": {"beta": 5.0}}}
    cfg = write_config(tmp_path / "micro.yaml", micro_config)
    counts = job_counts(snakemake(tmp_path, "results/micro/tables/table4.md", "-n", "--configfile", str(cfg)).stdout)
    # RPO (default and beta 5), the default SFT it is judged against and the reference row, for both models; nothing else
    assert counts["train"] == 6 and counts["generate"] == 8 and counts["score"] == 6 and counts["judge"] == 4
    assert counts["ablation_table"] == 1
    assert not {"generate_ood", "score_ood", "table2", "table3", "figure1", "paper_comparison"} & set(counts)


def _browse_runs_through_a_real_mlflow_server(tmp_path, res):
    """As a user of the UI would: one experiment per config with the training kind tag, training runs whose dataset
    input carries the data's md5, and the runs behind Table IV through the documented filter."""
    with mlflow_server(f"sqlite:///{tmp_path}/results/mlflow.db") as url:
        experiment = rest(url, "experiments/get-by-name", query="?experiment_name=rpo-pipeline/micro")["experiment"]
        tags = {t["key"]: t["value"] for t in experiment["tags"]}
        assert (
            tags["mlflow.experimentKind"] == "custom_model_development" and "tags.table4" in tags["mlflow.note.content"]
        )

        def search(filter_string):
            body = {"experiment_ids": [experiment["experiment_id"]], "filter": filter_string, "max_results": 1000}
            return rest(url, "runs/search", body)["runs"]

        training = search("tags.rule = 'train'")
        data_md5 = md5(tmp_path / "data" / "prepared" / "micro" / "train.parquet")
        assert len(training) == 10
        for run in training:
            (dataset,) = run["inputs"]["dataset_inputs"]
            assert dataset["dataset"]["digest"] == data_md5 and dataset["tags"][0]["value"] == "training"
            assert {"final_loss", "tokens_per_s", "final_kl"} <= {m["key"] for m in run["data"]["metrics"]}
        behind_table4 = {r["info"]["run_id"] for r in search(table_filter("table4"))}
        assert behind_table4 == set(json.loads((res / "tables" / "table4.runs.json").read_text())["mlflow_run_ids"])
    out = subprocess.run(
        [str(BIN / "rpo"), "runs", "--config", str(res / "config.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=run_env(),
        check=True,
    ).stdout
    assert f"#/experiments/{experiment['experiment_id']}/runs" in out and table_filter("table4") in out


def test_whole_dag_runs_and_reruns_only_what_a_change_or_target_needs(tmp_path, micro_config):
    """The whole DAG as `make demo` runs it (steps in children of the warm-start server; tests/test_slurm.py runs
    each step as its own process)."""
    micro_config["ablations"] = {"default": {}, "beta5": {"methods": ["rpo"], "objective": {"beta": 5.0}}}
    cfg = write_config(tmp_path / "micro.yaml", micro_config)
    snakemake(tmp_path, "--configfile", str(cfg), env=warm_env(tmp_path / "run"))
    res = tmp_path / "results" / "micro"
    for table in TABLES:
        for ext in ("md", "csv", "tex", "runs.json"):
            assert (res / "tables" / f"{table}.{ext}").is_file(), f"{table}.{ext}"
    for figure in ("figure1_training_time", "figure2_kl"):
        assert (res / "figures" / f"{figure}.png").stat().st_size > 1000 and (
            res / "figures" / f"{figure}.pdf"
        ).is_file()
    table2 = pd.read_csv(res / "tables" / "table2.csv")
    rouge = table2[table2["metric"] == "rouge_l"]
    assert len(rouge) == 10 and rouge["value"].between(0, 1).all()
    assert set(table2[table2["metric"] == "wr:oracle"]["row"]) == {"sft", "kto", "dro", "reference"}
    table4 = pd.read_csv(res / "tables" / "table4.csv")
    assert set(table4["row"]) == {"beta=5", "RPO (ref.)", "Reference"}
    # The reference row is the reference's own generations, scored like every run's.
    reference_run = res / "t5" / "reference" / "default" / "seed0"
    scores = json.loads((reference_run / "scores.json").read_text())
    row = table2[(table2["model"] == "t5") & (table2["row"] == "reference") & (table2["metric"] == "rouge_l")]
    assert row["value"].item() == pytest.approx(scores["metrics"]["rouge_l"])
    generations = [json.loads(line) for line in (reference_run / "generations.jsonl").read_text().splitlines()]
    resolved = rpo_config.load(res / "configs" / "ablation_default.yaml")
    generator = generation.make_generator(resolved, "t5", res / "t5" / "reference" / "model")
    prompts, size = [g["prompt"] for g in generations], resolved["generate"]["batch_size"]
    regenerated = [text for i in range(0, len(prompts), size) for text in generator(prompts[i : i + size], seed=0)]
    assert regenerated == [g["generation"] for g in generations]
    assert "\\begin{tabular}" in (res / "tables" / "table4.tex").read_text()

    with sqlite3.connect(tmp_path / "results" / "mlflow.db") as con:
        rules = dict(con.execute("select value, count(*) from tags where key = 'rule' group by value").fetchall())
        run_ids = {r for (r,) in con.execute("select run_uuid from runs")}
        report_artifacts = con.execute(
            "select artifact_uri from runs r join tags t on r.run_uuid = t.run_uuid "
            "where t.key = 'rule' and t.value = 'report'"
        ).fetchall()
    assert rules == {
        "train": 10,
        "generate": 12,  # and the references'
        "score": 12,
        "generate_ood": 10,
        "score_ood": 10,
        "judge": 16,  # and RPO against each reference
        "report": 1,
    }
    for sidecar in [
        *res.glob("tables/*.runs.json"),
        *res.glob("figures/*.runs.json"),
        res / "paper_comparison.runs.json",
    ]:
        ids = json.loads(sidecar.read_text())["mlflow_run_ids"]
        assert ids and set(ids) <= run_ids, sidecar.name
    report_run = json.loads((res / "report_run.json").read_text())
    assert report_run["report_run_id"] in run_ids and len(report_artifacts) == 1
    assert set(report_run["source_run_ids"]) <= run_ids

    _browse_runs_through_a_real_mlflow_server(tmp_path, res)

    html = tmp_path / "results" / "report.html"
    snakemake(tmp_path, "--configfile", str(cfg), "--report", str(html))
    assert html.stat().st_size > 10_000

    # Nothing to do once complete.
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "--configfile", str(cfg)).stdout
    # Changing one ablation reruns its runs and what reports them, nothing of the default runs.
    micro_config["ablations"]["beta5"]["objective"]["beta"] = 3.0
    write_config(tmp_path / "micro.yaml", micro_config)
    assert job_counts(snakemake(tmp_path, "-n", "--configfile", str(cfg)).stdout) == {
        "resolve_config": 3,
        "train": 2,
        "generate": 2,
        "score": 2,
        "judge": 2,
        "ablation_table": 1,
        "paper_comparison": 1,
        "mlflow_report_run": 1,
        "all": 1,
    }
    micro_config["ablations"]["beta5"]["objective"]["beta"] = 5.0
    write_config(tmp_path / "micro.yaml", micro_config)

    # Changed generations of one cell rerun that cell's scoring, its judging and the reports.
    time.sleep(1)
    generations = res / "t5" / "sft" / "default" / "seed0" / "generations.jsonl"
    generations.write_text(generations.read_text().replace('"generation": "', '"generation": "edited '))
    counts = job_counts(snakemake(tmp_path, "-n", "--configfile", str(cfg)).stdout)
    assert counts["score"] == 1 and counts["judge"] == 2 and "train" not in counts  # default and beta5 vs SFT

    # Naming one output as the target builds only what it needs.
    target = "results/micro/llama/kto/default/seed0/generations.jsonl"
    (tmp_path / target).unlink()
    assert job_counts(snakemake(tmp_path, target, "-n", "--configfile", str(cfg)).stdout) == {"generate": 1}

    # A trained policy deleted by hand is rebuilt, and what reads it with it, nothing of the other cells (rule all
    # did not ask for model folders: with the files made from it still there, there was nothing to do).
    before = job_counts(snakemake(tmp_path, "-n", "--configfile", str(cfg)).stdout)
    shutil.rmtree(res / "llama" / "dro" / "default" / "seed0" / "model")
    plan = snakemake(tmp_path, "-n", "--configfile", str(cfg)).stdout
    after = job_counts(plan)
    assert after["train"] == before.get("train", 0) + 1 and "results/micro/llama/dro/default/seed0/model" in plan
    assert after["generate"] == before.get("generate", 0) + 1 and after["score"] == before.get("score", 0) + 1
    assert not {"init_model", "prepare_data", "reference_logprobs", "resolve_config"} & set(after)
