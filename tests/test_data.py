"""Data preparation on generated files in both layouts: counts, standardisation, held-out split,
ablation variants, every bad-input case, the hub loader, and DVC versioning."""

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
from conftest import BIN, run_env, write_config

from rpo import config
from rpo.cli import main
from rpo.data import prepare, variants
from rpo.errors import DataError
from rpo.io import md5

PROMPTS = [f"Prompt number {i}: write something." for i in range(12)]


def triplet_rows():
    """12 prompts x 4 completions; rewards 10, 7, 4, 1 for even prompts, 8, 6, 4, 2 for odd ones."""
    rows = []
    for i, prompt in enumerate(PROMPTS):
        for j, reward in enumerate([10, 7, 4, 1] if i % 2 == 0 else [8, 6, 4, 2]):
            rows.append({"instruction": prompt, "response": f"answer {j} to prompt {i}", "reward": reward})
    return rows


def ultrafeedback_rows():
    out = []
    for prompt in PROMPTS:
        group = [r for r in triplet_rows() if r["instruction"] == prompt]
        out.append(
            {
                "source": "test",
                "instruction": prompt,
                "models": ["a", "b", "c", "d"],
                "completions": [
                    {
                        "model": "m",
                        "response": r["response"],
                        "overall_score": float(r["reward"]),
                        "fine-grained_score": r["reward"] / 2,
                        "annotations": {"helpfulness": {"Rating": "4"}},
                    }
                    for r in group
                ],
            }
        )
    return out


def write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


def cfg_for(path, **data_cfg):
    source = {".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix, "hub")
    return config.resolve(
        {
            "name": "d",
            "methods": ["rpo"],
            "models": {"m": {"arch": "causal", "source": "tiny"}},
            "data": {"source": source, "path": str(path), "n_eval_prompts": 3, "dvc": False, **data_cfg},
        }
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("layout", ["triplets", "ultrafeedback"])
def test_both_layouts_give_the_same_tables(tmp_path, suffix, layout):
    rows = triplet_rows() if layout == "triplets" else ultrafeedback_rows()
    path = write(tmp_path / f"in{suffix}", rows)
    manifest = prepare.prepare(cfg_for(path, layout=layout, eval_min_reward=10), tmp_path / "out")
    train = pd.read_parquet(tmp_path / "out" / "train.parquet")
    evaluation = pd.read_parquet(tmp_path / "out" / "eval.parquet")

    assert manifest["rows"] == {"train": 36, "eval": 3}
    assert manifest["prompts"] == {"train": 9, "eval": 3, "dev": 0, "test": 3}
    assert list(train.columns) == prepare.COLUMNS and (train["split"] == "train").all()
    # held out: prompts with a reward-10 completion (the even ones), with exactly that completion, never trained on
    assert (evaluation["reward_raw"] == 10).all() and evaluation["response"].str.startswith("answer 0").all()
    assert not set(evaluation["prompt_id"]) & set(train["prompt_id"])
    assert set(evaluation["prompt"]) <= set(PROMPTS[::2])
    # z-scored with the training split's statistics, applied to the held-out rows too
    assert train["reward"].mean() == pytest.approx(0, abs=1e-12) and train["reward"].std(ddof=0) == pytest.approx(1)
    mean, std = train["reward_raw"].mean(), train["reward_raw"].std(ddof=0)
    assert evaluation["reward"].to_numpy() == pytest.approx(((evaluation["reward_raw"] - mean) / std).to_numpy())
    assert manifest["reward_raw"]["train_mean"] == pytest.approx(mean)
    assert manifest["md5"]["outputs"]["train"] == md5(tmp_path / "out" / "train.parquet")
    assert manifest["md5"]["inputs"] == {str(path): md5(path)}
    assert train["prompt_id"].iloc[0] == prepare.prompt_id(train["prompt"].iloc[0])


def test_ultrafeedback_fine_grained_reward(tmp_path):
    path = write(tmp_path / "uf.jsonl", ultrafeedback_rows())
    prepare.prepare(
        cfg_for(path, layout="ultrafeedback", reward_field="fine-grained_score", eval_min_reward=5), tmp_path / "out"
    )
    assert pd.read_parquet(tmp_path / "out" / "train.parquet")["reward_raw"].max() <= 5


def test_held_out_fallback_when_prompts_lack_a_top_completion(tmp_path):
    path = write(tmp_path / "in.jsonl", triplet_rows())
    with pytest.raises(DataError, match="data.n_eval_prompts"):
        prepare.prepare(cfg_for(path, n_eval_prompts=8, eval_min_reward=10), tmp_path / "a")
    prepare.prepare(cfg_for(path, n_eval_prompts=8, eval_min_reward=10, eval_fallback="best"), tmp_path / "b")
    evaluation = pd.read_parquet(tmp_path / "b" / "eval.parquet")
    assert len(evaluation) == 8 and (evaluation["reward_raw"] == 10).sum() == 6


def test_hub_loader_through_datasets(tmp_path):
    # `datasets.load_dataset` on a folder with one file per split: the code path that loads
    # bilalfaye/ultrafeedback-rpo-split on a cluster, offline.
    folder = tmp_path / "rpo-split"
    folder.mkdir()
    rows = triplet_rows()
    write(folder / "train.jsonl", rows[:32])
    write(folder / "validation.jsonl", rows[32:])
    manifest = prepare.prepare(
        cfg_for(folder, hub_split="train", hub_eval_split="validation", n_eval_prompts=2, eval_min_reward=10),
        tmp_path / "out",
    )
    evaluation = pd.read_parquet(tmp_path / "out" / "eval.parquet")
    assert manifest["rows"] == {"train": 32, "eval": 2}
    assert set(evaluation["prompt"]) <= {r["instruction"] for r in rows[32:]}


# --- bad input -----------------------------------------------------------------------------------------

BAD = [
    ({"instruction": "p0", "response": "r"}, "reward", "missing field 'reward'"),
    ({"response": "r", "reward": 1}, "instruction", "missing field"),
    ({"instruction": "p0", "response": "r", "reward": "high"}, "reward", "not a number"),
    ({"instruction": "p0", "response": "r", "reward": float("nan")}, "reward", "outside"),
    ({"instruction": "p0", "response": "r", "reward": float("inf")}, "reward", "outside"),
    ({"instruction": "p0", "response": "   ", "reward": 1}, "response", "empty"),
    ({"instruction": "", "response": "r", "reward": 1}, "prompt", "empty"),
    ({"instruction": "p0", "response": "x" * 50_001, "reward": 1}, "response", "longer than"),
    ({"instruction": "alone", "response": "only one", "reward": 3}, "prompt", "1 response(s)"),
]


def bad_file(tmp_path):
    rows = triplet_rows()
    lines = [json.dumps(r) for r in rows]
    for record, _, _ in BAD:
        lines.append(json.dumps(record).replace("NaN", "NaN").replace("Infinity", "Infinity"))
    lines.append(json.dumps(rows[5]))  # exact duplicate of row 5
    lines.append("{not json")
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, len(rows)


def test_bad_rows_error_names_file_row_and_field_and_lists_every_reject(tmp_path, capsys):
    path, n_good = bad_file(tmp_path)
    cfg = cfg_for(path)
    with pytest.raises(DataError) as err:
        prepare.prepare(cfg, tmp_path / "out")
    message = str(err.value)
    assert f"{path}: line {n_good + 1} field 'reward': missing field 'reward'" in message
    assert f"{len(BAD) + 2} bad row(s)" in message
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == len(BAD) + 2  # nothing lost: the rejects file survives the error
    assert not (tmp_path / "out" / "train.parquet").exists()


def test_bad_rows_drop_keeps_the_good_ones_and_accounts_for_every_drop(tmp_path):
    path, n_good = bad_file(tmp_path)
    manifest = prepare.prepare(cfg_for(path, on_bad_rows="drop", max_chars=50_000), tmp_path / "out")
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    by_line = {r["line"]: r for r in rejects}
    for offset, (_, fieldname, reason) in enumerate(BAD):
        entry = by_line[n_good + offset + 1]
        assert entry["field"] == fieldname and reason in entry["reason"] and entry["file"] == str(path)
    assert (
        "exact duplicate of" in by_line[n_good + len(BAD) + 1]["reason"]
        and "line 6" in by_line[n_good + len(BAD) + 1]["reason"]
    )
    assert "not valid JSON" in by_line[n_good + len(BAD) + 2]["reason"]
    assert manifest["rejected"]["total"] == len(rejects) == len(BAD) + 2
    assert sum(manifest["rejected"]["by_reason"].values()) == len(rejects)
    assert manifest["rows"]["train"] + manifest["rows"]["eval"] * 4 == n_good  # every good row is kept


def test_cli_reports_bad_data_with_exit_code_2(tmp_path, capsys):
    path, n_good = bad_file(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        json.dumps(
            {
                "name": "d",
                "methods": ["rpo"],
                "models": {"m": {"arch": "causal", "source": "tiny"}},
                "data": {"source": "jsonl", "path": str(path), "n_eval_prompts": 2, "dvc": False},
            }
        )
    )
    assert main(["prepare-data", "--config", str(cfg), "--out-dir", str(tmp_path / "out")]) == 2
    assert f"{path}: line {n_good + 1} field 'reward'" in capsys.readouterr().err


# --- ablation variants -----------------------------------------------------------------------------------


@pytest.fixture
def train_table(tmp_path):
    path = write(tmp_path / "in.jsonl", triplet_rows())
    prepare.prepare(cfg_for(path, n_eval_prompts=3), tmp_path / "out")
    return pd.read_parquet(tmp_path / "out" / "train.parquet")


@pytest.mark.parametrize("density, kept", [(0.25, 1), (0.5, 2), (0.75, 3), (1.0, 4)])
def test_density_keeps_rounded_share_per_prompt(train_table, density, kept):
    variant = variants.density_variant(train_table, density, seed=0)
    assert (variant.groupby("prompt_id").size() == kept).all()
    assert variant["prompt_id"].nunique() == train_table["prompt_id"].nunique()
    merged = variant.merge(train_table, on="row", suffixes=("", "_base"))
    assert len(merged) == len(variant) and (merged["response"] == merged["response_base"]).all()
    assert variant.equals(variants.density_variant(train_table, density, seed=0))
    if density < 1:
        assert not variant.equals(variants.density_variant(train_table, density, seed=1))


def test_density_rounding():
    assert [variants.keep_count(3, d) for d in (0.25, 0.5, 0.75)] == [1, 2, 2]  # 0.75, 1.5, 2.25 -> 1, 2, 2
    assert [variants.keep_count(1, d) for d in (0.25, 0.5)] == [1, 1]  # never below one response
    assert variants.keep_count(5, 0.5) == 3  # 2.5 rounds up, where Python's round() would give 2


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0])
def test_noise_perturbs_standardised_training_rewards_only(train_table, sigma):
    big = pd.concat([train_table] * 200, ignore_index=True)
    noisy = variants.noise_variant(big, sigma, seed=0)
    delta = noisy["reward"] - big["reward"]
    assert delta.std() == pytest.approx(sigma, rel=0.05) and abs(delta.mean()) < 0.05 * sigma + 0.01
    assert (noisy["reward_raw"] == big["reward_raw"]).all() and (noisy["response"] == big["response"]).all()
    assert noisy.equals(variants.noise_variant(big, sigma, seed=0))


def test_variant_cli_and_training_table_names(tmp_path, train_table):
    base = tmp_path / "out" / "train.parquet"
    cfg = cfg_for(tmp_path / "in.jsonl", n_eval_prompts=3)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(json.dumps(cfg))
    assert (
        main(
            [
                "data-variant",
                "--config",
                str(cfg_path),
                "--train",
                str(base),
                "--kind",
                "density",
                "--value",
                "0.5",
                "--out",
                str(tmp_path / "out" / "train_density0.5.parquet"),
            ]
        )
        == 0
    )
    assert len(pd.read_parquet(tmp_path / "out" / "train_density0.5.parquet")) == len(train_table) // 2
    ablated = config.resolve(
        {**cfg, "ablations": {"default": {}, "d": {"data": {"density": 0.5}}, "n": {"data": {"noise": 0.1}}}}
    )
    assert [config.training_table_name(config.for_ablation(ablated, a)) for a in ("default", "d", "n")] == [
        "train",
        "train_density0.5",
        "train_noise0.1",
    ]


# --- DVC ---------------------------------------------------------------------------------------------------


def test_prepared_tables_are_versioned_with_dvc(tmp_path, train_table):
    repo = tmp_path / "repo"
    (repo / "data" / "prepared").mkdir(parents=True)
    env = run_env()
    for cmd in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        [str(BIN / "dvc"), "remote", "add", "-d", "local", str(tmp_path / "store")],
    ):
        subprocess.run(cmd, cwd=repo, check=True, env=env, capture_output=True)
    folder = repo / "data" / "prepared" / "d"
    (tmp_path / "out").rename(folder)
    out = subprocess.run(
        [str(BIN / "rpo"), "version-data", "--path", "data/prepared/d"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert (repo / "data" / "prepared" / "d.dvc").is_file()
    remote = subprocess.run([str(BIN / "dvc"), "status", "-c"], cwd=repo, env=env, capture_output=True, text=True)
    assert "in sync" in remote.stdout
    local = subprocess.run([str(BIN / "dvc"), "status"], cwd=repo, env=env, capture_output=True, text=True)
    assert "up to date" in local.stdout
    # the md5 this project records (manifest, MLflow tags) is the key DVC stores the file under
    digest = md5(folder / "train.parquet")
    assert (tmp_path / "store" / "files" / "md5" / digest[:2] / digest[2:]).is_file()
    assert json.loads((folder / "manifest.json").read_text())["md5"]["outputs"]["train"] == digest


def test_versioning_outside_a_dvc_repo_says_what_to_do(tmp_path):
    out = subprocess.run(
        [str(BIN / "rpo"), "version-data", "--path", "x"], cwd=tmp_path, env=run_env(), capture_output=True, text=True
    )
    assert out.returncode == 2 and "dvc init" in out.stderr and "data.dvc: false" in out.stderr


def _dvc_repo(root, git=True):
    root.mkdir()
    for cmd in ([["git", "init", "-q"]] if git else []) + [
        [str(BIN / "dvc"), "init", "-q", *([] if git else ["--no-scm"])]
    ]:
        subprocess.run(cmd, cwd=root, check=True, env=run_env(), capture_output=True)
    if not git:  # a copy of a git project without its .git: DVC's config still says it uses git
        subprocess.run([str(BIN / "dvc"), "config", "core.no_scm", "false"], cwd=root, check=True, env=run_env())
    (root / "data" / "prepared" / "d").mkdir(parents=True)
    (root / "data" / "prepared" / "d" / "train.parquet").write_bytes(b"the prepared table")
    return root


def test_a_project_without_git_gets_the_reason_and_what_to_do(tmp_path):
    """dvc add --quiet failed with nothing after the colon in a copy of the project that is not a git repository."""
    repo = _dvc_repo(tmp_path / "copy", git=False)
    command = [str(BIN / "rpo"), "version-data", "--path", "data/prepared/d"]
    out = subprocess.run(command, cwd=repo, env=run_env(), capture_output=True, text=True)
    assert out.returncode == 2 and "is not a git repository" in out.stderr and "core.no_scm true" in out.stderr
    subprocess.run([str(BIN / "dvc"), "config", "core.no_scm", "true"], cwd=repo, check=True, env=run_env())
    out = subprocess.run(command, cwd=repo, env=run_env(), capture_output=True, text=True)
    assert out.returncode == 0 and (repo / "data" / "prepared" / "d.dvc").is_file(), out.stderr


def test_a_failing_dvc_call_says_dvcs_reason(tmp_path, monkeypatch):
    from rpo import versioning
    from rpo.errors import VersioningError

    monkeypatch.chdir(_dvc_repo(tmp_path / "repo"))
    with pytest.raises(VersioningError, match=r"dvc add data/prepared/missing failed: \S+"):
        versioning.track("data/prepared/missing")


@pytest.mark.parametrize("defect", ["edited pointer", "data changed after dvc add"])
def test_training_refuses_prepared_data_its_dvc_pointer_does_not_name(tmp_path, monkeypatch, capsys, defect):
    """A .dvc pointer edited by hand was accepted: the rerun said "Nothing to be done" while `dvc status` said the
    data was not in the cache, and that pointer would have been committed."""
    repo = _dvc_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    subprocess.run([str(BIN / "dvc"), "add", "-q", "data/prepared/d"], check=True, env=run_env())
    pointer, table = repo / "data" / "prepared" / "d.dvc", repo / "data" / "prepared" / "d" / "train.parquet"
    if defect == "edited pointer":
        pointer.write_text(re.sub(r"md5: \w+", "md5: 0123456789abcdef0123456789abcdef", pointer.read_text(), count=1))
    else:
        table.unlink()  # a read-only link into DVC's cache: replace it, as a rerun of prepare-data does
        table.write_bytes(b"another table")
    cfg = write_config(
        tmp_path / "c.yaml", {"name": "d", "methods": ["rpo"], "models": {"m": {"arch": "causal", "source": "tiny"}}}
    )
    cell = ["--model", "m", "--method", "rpo", "--init", "none", "--out-dir", str(tmp_path / "run")]
    code = main(["train", "--config", str(cfg), *cell, "--train", str(table), "--dvc-pointer", str(pointer)])
    err = capsys.readouterr().err
    assert code == 2 and str(pointer) in err and "Traceback" not in err, err
    assert ("not in DVC's cache" if defect == "edited pointer" else f"md5 {md5(table)}") in err
    assert not (tmp_path / "run" / "train.json").exists()


@pytest.mark.parametrize(
    "estimator, density, share", [("mean", 0.25, 1.0), ("mean", 1.0, 0.0), ("ref_weighted", 0.25, 0.0)]
)
def test_one_completion_per_prompt_is_flagged_as_a_zero_target_under_the_papers_estimator(
    tmp_path, train_table, estimator, density, share, capsys
):
    """Density 25% of 4 completions keeps 1 per prompt: the variant counts those prompts, and under the paper's mean
    estimator V_hat = r, so RPO's target (r - V_hat)/beta is 0 on every prompt; under the released code's
    reference-weighted sum it is -log pi_ref(y|x), not zero."""
    from rpo.train import objectives

    table = variants.density_variant(train_table, density, seed=0).assign(ref_logp=-5.0)
    cfg = {"objective": {"beta": 1.0, "rpo": {"estimator": estimator}}}
    prepared = objectives.get("rpo").prepare(table, cfg)
    assert objectives.get("rpo").target_zero_share(prepared) == share
    assert objectives.get("sft").target_zero_share(prepared) is None  # not defined for other methods
    base, out = tmp_path / "base.parquet", tmp_path / "variant.parquet"
    train_table.to_parquet(base)
    counts = variants.make_variant({"data": {"variant_seed": 0}}, base, "density", density, out)
    prompts = train_table["prompt_id"].nunique()
    assert counts["prompts"] == prompts and counts["prompts_under_2_completions"] == (prompts if density < 0.5 else 0)
    assert ("fewer than 2 completions" in capsys.readouterr().err) == (density < 0.5)


def test_held_out_prompts_split_into_dev_and_test_the_same_way_every_time(tmp_path):
    path = write(tmp_path / "in.jsonl", triplet_rows())
    manifest = prepare.prepare(cfg_for(path, n_eval_prompts=5, n_dev_prompts=2), tmp_path / "a")
    held_out = pd.read_parquet(tmp_path / "a" / "eval.parquet")
    assert sorted(held_out["split"]) == ["dev", "dev", "test", "test", "test"]
    assert manifest["prompts"]["dev"] == 2 and manifest["prompts"]["test"] == 3
    assert (pd.read_parquet(tmp_path / "a" / "train.parquet")["split"] == "train").all()
    prepare.prepare(cfg_for(path, n_eval_prompts=5, n_dev_prompts=2), tmp_path / "b")
    assert held_out.equals(pd.read_parquet(tmp_path / "b" / "eval.parquet"))
    assert list(prepare.test_part(held_out)["split"]) == ["test"] * 3


def test_a_pointer_is_checked_in_the_default_cache_or_a_configured_one(tmp_path, monkeypatch):
    """The listing is looked up in .dvc/cache first (no dvc process) and, when not there, in DVC's configured
    cache.dir: both pass untouched data and refuse changed data."""
    from rpo import versioning
    from rpo.errors import VersioningError

    repo = _dvc_repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    subprocess.run([str(BIN / "dvc"), "config", "cache.dir", str(tmp_path / "elsewhere")], check=True, env=run_env())
    subprocess.run([str(BIN / "dvc"), "add", "-q", "data/prepared/d"], check=True, env=run_env())
    pointer, table = repo / "data" / "prepared" / "d.dvc", repo / "data" / "prepared" / "d" / "train.parquet"
    assert not (repo / ".dvc" / "cache").exists() and (tmp_path / "elsewhere" / "files").is_dir()
    versioning.check_pointer(pointer, [table])
    shutil.copytree(tmp_path / "elsewhere", repo / ".dvc" / "cache")  # the same listing, in the default cache
    versioning.check_pointer(pointer, [table])
    table.unlink()
    table.write_bytes(b"another table")
    with pytest.raises(VersioningError, match="data changed after it was versioned"):
        versioning.check_pointer(pointer, [table])
