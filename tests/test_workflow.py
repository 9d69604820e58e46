"""The Snakemake DAG: planning, lint, a whole run on the micro config, and partial reruns by target."""
import json
import re
import sqlite3
import time

import pandas as pd

from conftest import REPO, snakemake, write_config


def job_counts(output: str) -> dict:
    stats = output.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def test_dry_run_plans_the_expected_jobs(tmp_path, micro_config):
    cfg = write_config(tmp_path / "micro.yaml", micro_config)
    result = snakemake(tmp_path, "-n", "--configfile", str(cfg))
    assert job_counts(result.stdout) == {"resolve_config": 1, "prepare_data": 1, "init_model": 2, "reference_logprobs": 2,
                                         "train": 8, "generate": 8, "score": 8, "generate_ood": 8, "score_ood": 8,
                                         "judge": 2, "table2": 1, "all": 1}


def test_ablations_plan_their_data_variants(tmp_path, micro_config):
    micro_config["ablations"] = {"default": {}, "beta5": {"methods": ["rpo"], "objective": {"beta": 5.0}},
                                 "density0.5": {"methods": ["rpo"], "data": {"density": 0.5}},
                                 "noise0.1": {"methods": ["rpo", "sft"], "data": {"noise": 0.1}}}
    cfg = write_config(tmp_path / "micro.yaml", micro_config)
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(cfg))
    counts = job_counts(result.stdout)
    assert counts["data_variant"] == 2 and counts["train"] == 8 + 2 * (1 + 1 + 2)
    assert "data/prepared/micro/train_density0.5.parquet" in result.stdout
    assert "--train data/prepared/micro/train_noise0.1.parquet" in result.stdout


def test_lint_is_clean():
    result = snakemake(REPO, "--lint")
    assert "Congratulations" in result.stdout + result.stderr


def test_whole_dag_runs_and_reruns_only_what_a_target_needs(tmp_path, micro_config):
    cfg = write_config(tmp_path / "micro.yaml", micro_config)
    snakemake(tmp_path, "--configfile", str(cfg))
    res = tmp_path / "results" / "micro"
    table = pd.read_csv(res / "tables" / "table2.csv")
    assert len(table) == 8 and table["rouge_l"].between(0, 1).all()
    with sqlite3.connect(tmp_path / "results" / "mlflow.db") as con:
        rules = dict(con.execute("select value, count(*) from tags where key = 'rule' group by value").fetchall())
    assert rules == {"train": 8, "generate": 8, "score": 8, "generate_ood": 8, "score_ood": 8, "judge": 2, "report": 1}
    winrates = json.loads((res / "llama" / "judge" / "oracle" / "seed0" / "winrates.json").read_text())
    assert set(winrates["in_domain"]) == {"sft", "kto", "dro"} and winrates["in_domain"]["sft"]["n"] == 4
    ood_scores = json.loads((res / "t5" / "kto" / "default" / "seed0" / "ood_scores.json").read_text())
    assert ood_scores["benchmarks"]["mt_bench"]["n"] == 4  # 2 questions x 2 turns

    # Nothing to do once complete; changed generations of one cell rerun that cell's scoring and the table only.
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "--configfile", str(cfg)).stdout
    time.sleep(1)
    generations = res / "t5" / "rpo" / "default" / "seed0" / "generations.jsonl"
    generations.write_text(generations.read_text().replace('"generation": "', '"generation": "edited '))
    assert job_counts(snakemake(tmp_path, "-n", "--configfile", str(cfg)).stdout) == {"score": 1, "judge": 1, "table2": 1, "all": 1}

    # Naming one output as the target builds only what it needs.
    target = "results/micro/llama/sft/default/seed0/generations.jsonl"
    (tmp_path / target).unlink()
    assert job_counts(snakemake(tmp_path, target, "-n", "--configfile", str(cfg)).stdout) == {"generate": 1}
