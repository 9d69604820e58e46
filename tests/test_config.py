import subprocess

import pytest
import yaml
from conftest import BIN, REPO, run_env, snakemake, write_config

from rpo import config
from rpo.errors import ConfigError


def test_shipped_configs_are_valid():
    for path in sorted((REPO / "config").glob("*.yaml")):
        cfg = config.load(path)
        assert cfg["name"] and config.runs(cfg)


def test_defaults_are_filled_in(micro_config):
    cfg = config.resolve(micro_config)
    assert cfg["objective"]["beta"] == 1.0
    assert cfg["objective"]["rpo"]["estimator"] == "mean"
    assert cfg["generate"]["temperature"] == 0.7
    bare = config.resolve({"name": "b", "methods": ["rpo"], "models": {"m": {"arch": "causal", "source": "tiny"}}})
    assert (
        bare["data"]["n_eval_prompts"] == 10_000 and bare["data"]["eval_min_reward"] == 10.0
    )  # the paper's held-out set
    assert cfg["ablations"] == {"default": {}}
    assert "objective" not in micro_config, "resolve must not modify its input"


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["train"].update(lr_typo=1), "train.lr_typo"),
        (lambda c: c["train"].update(batch_size=0), "train.batch_size"),
        (lambda c: c["train"].update(batch_size="big"), "train.batch_size"),
        (lambda c: c.update(methods=["sft", "ppo"]), "methods.1"),
        (lambda c: c["models"]["t5"].update(arch="rnn"), "models.t5.arch"),
        (lambda c: c["models"]["t5"].pop("arch"), "models.t5.arch"),
        (lambda c: c.pop("models"), "models"),
        (lambda c: c.update(objective={"beta": 0}), "objective.beta"),
        (lambda c: c.update(objective={"rpo": {"estimator": "median"}}), "objective.rpo.estimator"),
        (lambda c: c.update(ablations={"default": {}, "b": {"methods": ["dpo"]}}), "ablations.b.methods"),
        (lambda c: c.update(ablations={"beta5": {}}), "ablations.default"),
        (lambda c: c["models"].update(big={"arch": "causal", "source": "pretrained"}), "models.big.path"),
    ],
)
def test_bad_config_names_the_key(micro_config, mutate, key):
    mutate(micro_config)
    with pytest.raises(ConfigError) as err:
        config.resolve(micro_config)
    assert f"'{key}'" in str(err.value)


def test_ablation_overrides_are_merged_and_validated(micro_config):
    micro_config["ablations"] = {
        "default": {},
        "beta5": {"methods": ["rpo"], "objective": {"beta": 5.0}},
        "broken": {"objective": {"beta": -1}},
    }
    cfg = config.resolve(micro_config)
    assert config.for_ablation(cfg, "beta5")["objective"]["beta"] == 5.0
    assert config.for_ablation(cfg, "default")["objective"]["beta"] == 1.0
    cells = config.runs(cfg)
    assert sorted({c["method"] for c in cells if c["ablation"] == "beta5"}) == ["rpo"]
    with pytest.raises(ConfigError, match="objective.beta"):
        config.for_ablation(cfg, "broken")


def test_cli_rejects_bad_config_before_any_work(tmp_path, micro_config):
    micro_config["train"]["epochz"] = 3
    path = write_config(tmp_path / "bad.yaml", micro_config)
    out = subprocess.run(
        [str(BIN / "rpo"), "prepare-data", "--config", str(path), "--out-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=run_env(),
    )
    assert out.returncode == 2
    assert "train.epochz" in out.stderr and str(path) in out.stderr
    assert not (tmp_path / "data").exists()


def test_snakemake_rejects_bad_config_before_any_job(tmp_path, micro_config):
    micro_config["generate"]["top_p"] = 2.0
    path = write_config(tmp_path / "bad.yaml", micro_config)
    result = snakemake(tmp_path, "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "top_p" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_resolved_config_round_trips(tmp_path, micro_config):
    path = write_config(tmp_path / "c.yaml", micro_config)
    out = tmp_path / "resolved.yaml"
    subprocess.run(
        [str(BIN / "rpo"), "config", "--config", str(path), "--out", str(out)],
        check=True,
        env=run_env(),
        capture_output=True,
    )
    assert config.resolve(yaml.safe_load(out.read_text())) == config.resolve(micro_config)


def test_the_schema_allows_exactly_the_registered_objectives():
    """A new objective is defined in the registry; its name must also be allowed by the schema (and no stale one)."""
    from rpo.train import objectives

    schema = config.load_schema()
    assert set(schema["properties"]["methods"]["items"]["enum"]) == set(objectives.REGISTRY)


def test_an_ablation_table_must_be_one_the_paper_defines(micro_config):
    micro_config["ablations"] = {
        "default": {},
        "b": {"methods": ["rpo"], "objective": {"beta": 2.0}, "table": "table9"},
    }
    with pytest.raises(ConfigError, match=r"ablations\.b\.table.*'table9' is not one of \['table4'"):
        config.resolve(micro_config)
