import subprocess

import pytest
import yaml
from conftest import BIN, REPO, run_env, snakemake, write_config

from rpo import config, paper
from rpo.errors import ConfigError

OVERLAYS = {"paper_released.yaml": "paper.yaml"}  # an overlay is merged into the config it amends


def test_shipped_configs_are_valid():
    for path in sorted((REPO / "config").glob("*.yaml")):
        layers = [path.with_name(OVERLAYS[path.name]), path] if path.name in OVERLAYS else [path]
        cfg = config.resolve(config.read_layers(layers), str(path))
        config.check_every_cell(cfg, str(path))
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


def _yaml_with(micro_config, path, extra: str = ""):
    path.write_text(yaml.safe_dump(micro_config) + extra)
    return path


# Edits a user makes by hand: each is refused by `rpo config` and by Snakemake before any job, naming the key or line.
EDITS = [
    ("duplicate section", lambda c: None, "train:\n  lr: 0.5\n", "duplicate key 'train'"),
    ("beta NaN", lambda c: c.update(objective={"beta": float("nan")}), "", "'objective.beta': nan is not a finite"),
    ("lr inf", lambda c: c["train"].update(lr=float("inf")), "", "'train.lr': inf is not a finite"),
    ("epochs 2.0", lambda c: c["train"].update(epochs=2.0), "", "'train.epochs': 2.0 is not of type 'integer'"),
    (
        "ablation beta",
        lambda c: c.update(ablations={"default": {}, "b": {"objective": {"beta": -1}}}),
        "",
        "ablation 'b'",
    ),
    (
        "ablation unknown key",
        lambda c: c.update(ablations={"default": {}, "b": {"train": {"lrr": 1}}}),
        "",
        "'train.lrr': unknown key",
    ),
    (
        "ablation density 2",
        lambda c: c.update(ablations={"default": {}, "d": {"data": {"density": 2}}}),
        "",
        "'data.density'",
    ),
    ("model override", lambda c: c["models"]["t5"].update(train={"batch_size": 0}), "", "model 't5'"),
    ("top_p", lambda c: c["generate"].update(top_p=2.0), "", "'generate.top_p'"),
    # a KL on a prefix of the responses the reward is measured on is biased low
    ("kl shorter", lambda c: c["train"].update(kl_max_new_tokens=4), "", "'train.kl_max_new_tokens': 4 tokens"),
    ("no test split", lambda c: c["data"].update(n_dev_prompts=4), "", "'data.n_dev_prompts': 4 leaves none"),
    # names become paths: nothing may climb out of results/<name>/ or reach a shell
    ("name ..", lambda c: c.update(name=".."), "", "config key 'name': '..' does not match"),
    ("name shell", lambda c: c.update(name="x; touch y #"), "", "config key 'name': 'x; touch y #' does not match"),
    ("model ..", lambda c: c["models"].update({"..": c["models"]["t5"]}), "", "'..' does not match"),
    ("model hidden", lambda c: c["models"].update({".t5": c["models"]["t5"]}), "", "'.t5' does not match"),
    (
        "model tables",
        lambda c: c["models"].update(tables=c["models"]["t5"]),
        "",
        "'models.tables': the workflow writes",
    ),
    ("ablation ..", lambda c: c.update(ablations={"default": {}, "..": {}}), "", "'..' does not match"),
    (
        "experiment ..",
        lambda c: c.update(mlflow={"experiment": "../../../x"}),
        "",
        "config key 'mlflow.experiment': '../../../x' does not match",
    ),
    ("seeds twice", lambda c: c.update(seeds=[0, 1, 1]), "", "config key 'seeds': [0, 1, 1] has non-unique elements"),
    ("seed timestamp", lambda c: c.update(seeds=[1733100000000]), "", "'seeds.0': 1733100000000 is greater than"),
    (
        "ablation float key",
        lambda c: c.update(ablations={"default": {}, 0.5: {"objective": {"beta": 0.5}}}),
        "",
        "config key 'ablations.0.5': YAML read this key as float",
    ),
    ("yte", lambda c: c.update(__use_yte__=True), "", "config key '__use_yte__': YAML templates run code"),
    (
        "judge url password",
        lambda c: c.update(
            judge={
                "judges": {
                    "j": {"backend": "openai_compatible", "model": "m", "base_url": "http://u:s3cret@host:8000/v1"}
                }
            }
        ),
        "",
        "'judge.judges.j.base_url': holds a password or token (http://***@host:8000/v1)",
    ),
    (
        "alias bomb",
        lambda c: None,
        "bomb:\n  a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"  {k}: &{k} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, k in zip("abcdefgh", "bcdefghi")
        ),
        "its YAML aliases (*name) expand to",
    ),
]


@pytest.mark.parametrize("name, edit, extra, words", EDITS, ids=[e[0] for e in EDITS])
def test_an_edited_config_is_refused_by_rpo_config_naming_the_key(tmp_path, micro_config, name, edit, extra, words):
    edit(micro_config)
    path = _yaml_with(micro_config, tmp_path / "bad.yaml", extra)
    out = subprocess.run(
        [str(BIN / "rpo"), "config", "--config", str(path)], capture_output=True, text=True, env=run_env(), timeout=60
    )
    assert out.returncode == 2 and words in out.stderr and str(path) in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


SNAKEMAKE_EDITS = [EDITS[0], EDITS[4], EDITS[7], *(e for e in EDITS if e[0] in ("model ..", "ablation float key"))]


@pytest.mark.parametrize("name, edit, extra, words", SNAKEMAKE_EDITS, ids=lambda e: str(e)[:20])
def test_snakemake_rejects_bad_config_before_any_job_in_a_few_lines(tmp_path, micro_config, name, edit, extra, words):
    edit(micro_config)
    path = _yaml_with(micro_config, tmp_path / "bad.yaml", extra)
    result = snakemake(tmp_path, "--configfile", str(path), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and words in output, output
    assert len(output.strip().splitlines()) <= 6 and "Traceback" not in output  # no schema dump
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "give a config file"),
        (["--config", "missing.yaml"], "missing.yaml: config file not found"),
        (["--config", "."], ".: a folder, not a config file"),
        (["--config", "syntax.yaml"], "syntax.yaml: not valid YAML: line 3"),
        (["--config", "latin1.yaml"], "latin1.yaml: not UTF-8 text"),
        (["--json", "{not json"], "--json: not valid JSON"),
        (["--json", "[1, 2]"], "the config must be a mapping"),
    ],
)
def test_rpo_config_says_what_is_wrong_with_its_argument(tmp_path, args, words):
    (tmp_path / "syntax.yaml").write_text("name: x\ntrain: {lr: 1\n")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\u00e9\n".encode("latin-1"))
    out = subprocess.run(
        [str(BIN / "rpo"), "config", *args], capture_output=True, text=True, env=run_env(), cwd=tmp_path
    )
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr


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
    beta_names = schema["$defs"]["objective"]["properties"]["method_beta"]["propertyNames"]["enum"]
    assert set(beta_names) == set(objectives.REGISTRY)
    # the workflow's torch-free list of methods that read reference rewards is the registry's
    needs = {name for name, o in objectives.REGISTRY.items() if o.needs_reference_rewards}
    assert needs == set(paper.REFERENCE_REWARD_METHODS)


def test_an_ablation_table_must_be_one_the_paper_defines(micro_config):
    micro_config["ablations"] = {
        "default": {},
        "b": {"methods": ["rpo"], "objective": {"beta": 2.0}, "table": "table9"},
    }
    with pytest.raises(ConfigError, match=r"ablations\.b\.table.*'table9' is not one of \['table4'"):
        config.resolve(micro_config)
