"""Outputs stay in their folders, are written whole or not at all, and hold no secret; what the length limits cut
is counted."""

import json
import subprocess
from types import SimpleNamespace

import pytest
from conftest import REPO, run_env, write_config

from rpo import io, paths
from rpo.cli import main
from rpo.errors import ConfigError, OutputError
from rpo.models import batching, build
from rpo.redact import redact

CFG = {"name": "demo"}


def test_every_output_pattern_of_the_workflow_stays_in_its_config_folders():
    assert paths.owned("results/demo/m/rpo/default/seed0/scores.json", CFG)
    assert paths.owned("data/prepared/demo/train.parquet", CFG) and paths.owned("data/prepared/demo.dvc", CFG)
    pattern = "{tables,data/prepared/demo|results/demo/m\\-1/data}/train_{kind,density|noise}{value,[0-9.]+}.parquet"
    examples = paths.pattern_examples(pattern)
    assert "results/demo/m-1/data/train_densityw.parquet" in examples and len(examples) == 4
    for path in examples:
        paths.owned(path, CFG)
    for outside in ("results/demo/../other/x", "results/x", "data/prepared/demo2/x", "data/raw/x", "/tmp/x"):
        with pytest.raises(ConfigError, match="outside results/demo/"):
            paths.owned(outside, CFG)
    with pytest.raises(ConfigError):
        paths.owned(paths.pattern_examples("{tables,data/raw|results/demo}/x")[0], CFG)
    rule = SimpleNamespace(name="escape", output=["results/demo/{model}/x", "{folder,results/demo|data/raw}/y"])
    with pytest.raises(ConfigError, match="rule escape: output 'data/raw/y'"):
        paths.check_rule_outputs([rule], CFG)


def test_make_demo_never_hands_the_config_name_to_a_shell(tmp_path):
    """`make demo` pasted `name:` into its recipe: `name: x; touch PWNED #` ran touch."""
    bad = write_config(tmp_path / "bad.yaml", {"name": f"x; touch {tmp_path}/PWNED #", "methods": ["rpo"]})
    result = subprocess.run(
        ["make", "-C", str(REPO), "-o", ".venv/.installed", "demo", f"CONFIG={bad}"],
        capture_output=True,
        text=True,
        env=run_env(),
        timeout=120,
    )
    assert result.returncode != 0 and "config key 'name'" in result.stderr, result.stderr
    assert not (tmp_path / "PWNED").exists() and not (REPO / "PWNED").exists()


def test_urls_lose_passwords_and_tokens_and_keep_the_rest():
    assert (
        redact("https://u:p4ss@host:5000/api?x=1&token=abc&api_key=k#f")
        == "https://***@host:5000/api?x=1&token=***&api_key=***#f"
    )
    assert redact("sqlite:////work/results/mlflow.db") == "sqlite:////work/results/mlflow.db"
    assert redact("failed: postgresql://admin:hunter2@db/mlflow") == "failed: postgresql://***@db/mlflow"


def _probe_fault(folder, kind):
    """A real read-only or full file system under `folder` (root ignores permission bits); None where this machine
    cannot mount one."""
    folder.mkdir()
    args = ["mount", "--bind", "-o", "ro", str(folder), str(folder)]
    if kind == "full":
        args = ["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(folder)]
    if subprocess.run(args, capture_output=True).returncode != 0:
        return None
    return folder


@pytest.fixture
def fault(tmp_path, request):
    folder = _probe_fault(tmp_path / "mnt", request.param)
    if folder is None:
        pytest.skip(f"cannot mount a {request.param} file system here (needs root with CAP_SYS_ADMIN)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("fault", ["full"], indirect=True)
def test_a_full_disk_leaves_no_half_written_table_where_the_next_step_reads(tmp_path, fault, capsys, micro_config):
    """prepare-data on a disk that fills mid-write: one line naming the file, exit 2, and no train.parquet, or the
    one from before, intact."""
    cfg = write_config(tmp_path / "c.yaml", micro_config | {"data": micro_config["data"] | {"dvc": False}})
    before = fault / "out" / "train.parquet"
    before.parent.mkdir()
    before.write_bytes(b"the previous, complete table")
    (fault / "filler").write_bytes(b"\0" * (44 * 1024 - 1))  # leave a few KB: the probe fits, the tables do not
    code = main(["prepare-data", "--config", str(cfg), "--out-dir", str(fault / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write" in err and str(fault / "out") in err and "Traceback" not in err, err
    assert before.read_bytes() == b"the previous, complete table"
    assert not [p for p in (fault / "out").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("fault", ["read-only"], indirect=True)
def test_a_read_only_results_folder_is_found_before_the_work_starts(tmp_path, fault, capsys, micro_config):
    cfg = write_config(tmp_path / "c.yaml", micro_config)
    gens = tmp_path / "generations.jsonl"
    gens.write_text(json.dumps({"prompt_id": "a", "prompt": "p", "reference": "r", "generation": "g"}) + "\n")
    cell = ["--model", "llama", "--method", "rpo"]
    out = fault / "run" / "scores.json"
    code = main(["score", "--config", str(cfg), *cell, "--generations", str(gens), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"{out}: cannot write into" in err, err
    assert "MLflow" not in err  # nothing was started: no run, no scoring


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "scores.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), io.atomic(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["scores.json"]
    with pytest.raises(OutputError, match="not a finite number"):
        io.write_json(target, {"reward": float("nan")})
    assert target.read_text() == "old"
    with pytest.raises(OutputError, match=f"{tmp_path / 'file'}/x: cannot write into"):
        (tmp_path / "file").write_text("a file where a folder should be")
        io.check_writable(tmp_path / "file" / "x")


def test_truncation_counts_rows_and_tokens_the_limits_cut():
    tokenizer = build.build_tokenizer(["short prompt", "a long answer " * 50], 300)
    counts = batching.truncation(tokenizer, ["short prompt"] * 3, ["ok", "a long answer " * 50, "ok"], 16, 8)
    assert counts["rows"] == 3 and counts["rows_cut"] == 1 and counts["responses_cut"] == 1
    assert counts["response_tokens_cut"] > 50 and counts["prompts_cut"] == 0
    assert "1 of 3 rows (33%) are cut" in batching.truncation_warning(counts, "t")
    assert batching.truncation_warning(batching.truncation(tokenizer, ["p"], ["ok"], 16, 8), "t") is None


def test_the_largest_seed_the_schema_allows_seeds_every_library():
    """A timestamp-sized seed passed `rpo config` and crashed in training; the schema's maximum must work with
    every seeding call the steps make (numpy's legacy seeding, torch, the derived per-batch seeds)."""
    import numpy as np
    import torch

    from rpo import config
    from rpo.models.generation import batch_seed
    from rpo.train.loop import set_seed

    top = config.load_schema()["$defs"]["seed"]["maximum"]
    set_seed(top)
    np.random.default_rng(top)
    torch.manual_seed(batch_seed(top, 10, 10_000))
    torch.manual_seed(top * 7919 + 10_000)
    with pytest.raises(ValueError):
        np.random.seed(2**32)  # the bound the schema keeps clear of


SCORES = {"model": "m", "method": "rpo", "ablation": "default", "seed": 0, "n": 4, "mlflow_run_id": "r"}


@pytest.mark.parametrize(
    "text, words",
    [
        (json.dumps(SCORES | {"metrics": {"rouge_l": 0.5}})[:60], "not valid JSON"),  # cut by a kill
        (json.dumps(SCORES | {"metrics": {"rouge_l": float("nan")}}), "key 'metrics.rouge_l': nan is not a finite"),
        (json.dumps(SCORES | {"metrics": {"x": 1}, "ci": {"x": [0, float("inf")]}}), "key 'ci.x.1': inf is not a"),
        (json.dumps(SCORES | {"metrics": {"rouge_l": "0.5"}}), "key 'metrics.rouge_l': '0.5' is not a number"),
        ("[1, 2]", "not a JSON object"),
    ],
    ids=["truncated", "NaN", "Infinity", "a string", "a list"],
)
def test_a_score_file_a_table_cannot_print_is_refused_by_file_and_key(tmp_path, capsys, micro_config, text, words):
    run = tmp_path / "m" / "rpo" / "default" / "seed0"
    run.mkdir(parents=True)
    (run / "scores.json").write_text(text)
    cfg = write_config(tmp_path / "c.yaml", micro_config)
    out = tmp_path / "tables" / "table2"
    code = main(
        ["report", "--config", str(cfg), "--what", "table2", "--out-prefix", str(out), str(run / "scores.json")]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{run / 'scores.json'}: " in err and words in err and "Traceback" not in err, err
    assert not list((tmp_path / "tables").glob("table2.*"))


def test_a_win_rate_is_nan_only_without_verdicts(tmp_path):
    from rpo.report.inputs import read_result

    path = tmp_path / "in_domain_rpo_vs_sft.json"
    nan = float("nan")
    path.write_text(
        json.dumps({"in_domain": {"sft": {"n": 0, "win": nan, "tie": nan, "loss": nan, "win_ci": [nan, nan]}}})
    )
    read_result(path)
    path.write_text(json.dumps({"in_domain": {"sft": {"n": 3, "win": nan, "tie": 0, "loss": 0, "win_ci": [0, 1]}}}))
    with pytest.raises(Exception, match="key 'in_domain.sft.win': nan"):
        read_result(path)


def test_per_prompt_scores_cut_at_a_line_boundary_are_refused(tmp_path):
    """A scores_per_example.jsonl cut short reads as valid JSON lines: the paired bootstrap would run on fewer
    prompts without a word."""
    from rpo.report.inputs import Inputs

    run = tmp_path / "seed0"
    run.mkdir()
    (run / "scores.json").write_text(json.dumps(SCORES | {"metrics": {"rouge_l": 0.5}, "ci": {"rouge_l": [0, 1]}}))
    rows = [{"prompt_id": str(i), "split": "test", "rouge_l": 0.5} for i in range(4)]
    (run / "scores_per_example.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(Inputs([run / "scores.json"]).per_prompt("rouge_l")) == 4
    (run / "scores_per_example.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    with pytest.raises(Exception, match="scores_per_example.jsonl: 3 rows, but .* counts 4 prompts"):
        Inputs([run / "scores.json"]).per_prompt("rouge_l")


def test_generations_cut_at_a_line_boundary_are_refused_by_score(tmp_path, capsys, micro_config):
    """A truncated generations.jsonl was scored on half its rows without a word."""
    import pandas as pd

    cfg = write_config(tmp_path / "c.yaml", micro_config)
    eval_path = tmp_path / "eval.parquet"
    pd.DataFrame({"prompt_id": [str(i) for i in range(4)]}).to_parquet(eval_path)
    rows = [
        {"prompt_id": str(i), "prompt": "p", "reference": "r", "generation": "g", "split": "test"} for i in range(4)
    ]
    gens = tmp_path / "generations.jsonl"
    gens.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    cell = ["--model", "llama", "--method", "rpo", "--generations", str(gens), "--eval", str(eval_path)]
    out = tmp_path / "run" / "scores.json"
    code = main(["score", "--config", str(cfg), *cell, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"{gens}: incomplete or stale generations: 2 of 4 prompts" in err, err
    assert not out.exists()
