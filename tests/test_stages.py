"""Each `rpo` step, called as the Snakemake rules call it, writes the outputs its rule declares."""

import json
import sqlite3

import pandas as pd
from conftest import write_config

from rpo.cli import main


def run(*argv):
    assert main([str(a) for a in argv]) == 0


def mlflow_runs(db):
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "select r.run_uuid, t.key, t.value from runs r join tags t on t.run_uuid = r.run_uuid"
        ).fetchall()
    runs = {}
    for run_id, key, value in rows:
        runs.setdefault(run_id, {})[key] = value
    return list(runs.values())


def test_each_stage_writes_its_declared_outputs(workdir, micro_config):
    cfg = write_config(workdir / "micro.yaml", micro_config)
    res = workdir / "results" / "micro"

    run("config", "--config", cfg, "--out", res / "config.yaml")
    assert (res / "config.yaml").is_file()
    cfg = res / "config.yaml"

    run("prepare-data", "--config", cfg, "--out-dir", res / "data")
    manifest = json.loads((res / "data" / "manifest.json").read_text())
    train = pd.read_parquet(res / "data" / "train.parquet")
    held_out = pd.read_parquet(res / "data" / "eval.parquet")
    assert manifest["rows"] == {"train": len(train), "eval": len(held_out)} and len(held_out) == 4
    assert not set(train["prompt_id"]) & set(held_out["prompt_id"])
    assert abs(train["reward"].mean()) < 1e-9 and abs(train["reward"].std(ddof=0) - 1) < 1e-9

    for model in ("llama", "t5"):
        ref_dir = res / model / "reference"
        run(
            "init-model",
            "--config",
            cfg,
            "--model",
            model,
            "--train",
            res / "data" / "train.parquet",
            "--out-dir",
            ref_dir,
        )
        assert (ref_dir / "config.json").is_file() and (ref_dir / "tokenizer.json").is_file()

        ref = res / model / "reference_logprobs.parquet"
        run(
            "ref-logprobs",
            "--config",
            cfg,
            "--model",
            model,
            "--model-dir",
            ref_dir,
            "--train",
            res / "data" / "train.parquet",
            "--out",
            ref,
        )
        cached = pd.read_parquet(ref)
        assert len(cached) == len(train) and (cached["ref_logp_sum"] < 0).all() and (cached["n_tokens"] > 0).all()

        for method in ("sft", "rpo", "dro", "kto"):
            run_dir = res / model / method / "default" / "seed0"
            cell = ["--model", model, "--method", method, "--ablation", "default", "--seed", "0"]
            run(
                "train",
                "--config",
                cfg,
                *cell,
                "--init",
                ref_dir,
                "--train",
                res / "data" / "train.parquet",
                "--ref",
                ref,
                "--eval",
                res / "data" / "eval.parquet",
                "--out-dir",
                run_dir,
            )
            assert (run_dir / "model" / "config.json").is_file() and (run_dir / "train.json").is_file()
            assert len(pd.read_csv(run_dir / "kl.csv")) >= 2 and not (run_dir / "checkpoint").exists()

            run(
                "generate",
                "--config",
                cfg,
                *cell,
                "--model-dir",
                run_dir / "model",
                "--eval",
                res / "data" / "eval.parquet",
                "--out",
                run_dir / "generations.jsonl",
            )
            lines = (run_dir / "generations.jsonl").read_text().splitlines()
            assert len(lines) == len(held_out)
            assert {"prompt_id", "prompt", "reference", "generation"} <= set(json.loads(lines[0]))
            assert not (run_dir / "generations.jsonl.partial").exists()

            run(
                "score",
                "--config",
                cfg,
                *cell,
                "--generations",
                run_dir / "generations.jsonl",
                "--out",
                run_dir / "scores.json",
            )
            scores = json.loads((run_dir / "scores.json").read_text())
            assert (
                set(scores["metrics"])
                == set(scores["ci"])
                == {"bertscore", "rouge_l", "toxicity", "distinct_2", "avg_len"}
            )
            assert all(lo <= hi for lo, hi in scores["ci"].values())
            assert len((run_dir / "scores_per_example.jsonl").read_text().splitlines()) == len(held_out)

    score_files = sorted(res.glob("*/*/default/seed0/scores.json"))
    run("report", "--config", cfg, "--what", "table2", "--out-prefix", res / "tables" / "table2", *score_files)
    table = pd.read_csv(res / "tables" / "table2.csv")
    rouge = table[table["metric"] == "rouge_l"]
    assert sorted(zip(rouge["model"], rouge["row"])) == [
        (m, x) for m in ("llama", "t5") for x in ("dro", "kto", "rpo", "sft")
    ]
    assert "| llama | RPO |" in (res / "tables" / "table2.md").read_text()
    sidecar = json.loads((res / "tables" / "table2.runs.json").read_text())
    assert len(sidecar["mlflow_run_ids"]) == 8 and len(sidecar["inputs"]) == 8
    run(
        "report",
        "--config",
        cfg,
        "--what",
        "mlflow_run",
        "--out-prefix",
        res / "report_run.json",
        *(res / "tables" / f"table2.{ext}" for ext in ("md", "csv", "tex", "runs.json")),
    )

    runs = mlflow_runs(workdir / "results" / "mlflow.db")
    by_rule = {}
    for tags in runs:
        by_rule.setdefault(tags["rule"], []).append(tags)
    assert {k: len(v) for k, v in by_rule.items()} == {"train": 8, "generate": 8, "score": 8, "report": 1}
    for tags in by_rule["train"]:
        assert {"model", "method", "ablation", "seed", "git_commit", "config"} <= set(tags)
        assert tags["data_md5"] == manifest["md5"]["outputs"]["train"]
    for tags in by_rule["generate"]:
        assert tags["eval_md5"] == manifest["md5"]["outputs"]["eval"]


def test_variant_tables_read_the_cache_of_the_full_table(workdir, micro_config):
    from rpo import config
    from rpo.train import objectives
    from rpo.train.inputs import training_table

    cfg = config.resolve(micro_config)
    res = workdir / "results" / "micro"
    cfg_path = write_config(workdir / "micro.yaml", micro_config)
    run("prepare-data", "--config", cfg_path, "--out-dir", res / "data")
    base = res / "data" / "train.parquet"
    run("init-model", "--config", cfg_path, "--model", "llama", "--train", base, "--out-dir", res / "ref")
    run(
        "ref-logprobs",
        "--config",
        cfg_path,
        "--model",
        "llama",
        "--model-dir",
        res / "ref",
        "--train",
        base,
        "--out",
        res / "ref.parquet",
    )
    variant = res / "data" / "train_density0.5.parquet"
    run("data-variant", "--config", cfg_path, "--train", base, "--kind", "density", "--value", "0.5", "--out", variant)

    full = training_table(cfg, objectives.get("kto"), base, res / "ref.parquet")
    part = training_table(cfg, objectives.get("kto"), variant, res / "ref.parquet", base)
    assert 0 < len(part) < len(full)
    expected = full.set_index("row").loc[part["row"]]
    assert (part["ref_logp"].to_numpy() == expected["ref_logp"].to_numpy()).all()
    assert (part["kl_response"].to_numpy() == expected["kl_response"].to_numpy()).all()
