"""docs/fidelity.md cannot drift from the paper configs: every key it lists has, in the resolved config/paper.yaml and
in paper.yaml + the overlay config/paper_released.yaml, the value the document states."""

import re

import pytest
import yaml
from conftest import REPO

from rpo import config

DOC = REPO / "docs" / "fidelity.md"


def _configs() -> dict:
    paper = config.read_yaml(REPO / "config" / "paper.yaml")
    released = config.read_layers([REPO / "config" / "paper.yaml", REPO / "config" / "paper_released.yaml"])
    return {"paper": config.resolve(paper), "released": config.resolve(released)}


def _rows() -> list[tuple[str, str, str, str]]:
    """(setting, key, paper.yaml value, paper_released value) for every row that names a config key."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if len(cells) == 6 and cells[1].startswith("`"):
            rows.append((cells[0], cells[1].strip("`"), cells[2].strip("`"), cells[5].strip("`")))
    return rows


def lookup(cfg: dict, key: str):
    """`a.b` in the run config; `<model>: a.b` with that model's overrides; `<method>: a.b` for that method's runs."""
    scope, _, path = key.rpartition(": ")
    if scope in cfg["models"]:
        cfg = config.for_model(cfg, scope)
    elif scope:
        cfg = config.for_run(cfg, next(iter(cfg["models"])), scope, "default")
    node = cfg
    for part in path.split("."):
        node = node[part]
    return node


def test_the_document_lists_every_setting_the_issue_names():
    keys = {key for _, key, _, _ in _rows()}
    for needed in [
        "flan-t5-small: train.lr",
        "flan-t5-xl: train.grad_accum",
        "train.epochs",
        "train.warmup_steps",
        "flan-t5-xl: train.max_prompt_len",
        "train.mixed_precision",
        "rpo: objective.beta",
        "dro: objective.beta",
        "kto: objective.beta",
        "objective.rpo.estimator",
        "objective.logprob_reduction",
        "objective.kto.reference_point",
        "objective.kto.desirable_weight",
        "objective.dro.value_model",
        "objective.sft.best_only",
        "data.standardize_rewards",
        "generate.temperature",
        "score.bertscore.model",
        "score.toxicity.model",
    ]:
        assert needed in keys, needed


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r[0])
def test_each_listed_value_is_the_configs_value(row):
    setting, key, in_paper, in_released = row
    configs = _configs()
    assert lookup(configs["paper"], key) == yaml.safe_load(in_paper), f"{setting}: paper.yaml"
    assert lookup(configs["released"], key) == yaml.safe_load(in_released), f"{setting}: + paper_released.yaml"


def test_the_two_configs_differ_where_the_released_code_does():
    paper, released = _configs().values()
    assert config.run_beta(paper, "rpo", "default") == 1.0 and config.run_beta(released, "rpo", "default") == 5.0
    assert config.run_beta(released, "rpo", "beta0.1") == 0.1  # an ablation's own beta still wins
    assert config.for_run(released, "flan-t5-xl", "kto", "default")["objective"]["beta"] == 1.0
    assert released["name"] != paper["name"]  # side by side: results/paper/ and results/paper-released/
