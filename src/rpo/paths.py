"""Where a config's outputs may go: results/<name>/ and data/prepared/<name>/ (and that folder's DVC pointer), and
results/tables/ for the copy of the current config's table a partial rerun by target asks for."""

from __future__ import annotations

import os
import re
from pathlib import Path

from rpo.errors import ConfigError

RESULTS_ROOT = Path("results")
PREPARED_ROOT = Path("data") / "prepared"
# `snakemake results/tables/table2.md` copies the current config's table here (rule latest_table).
LATEST_TABLES = RESULTS_ROOT / "tables"


def results_dir(cfg: dict) -> Path:
    return RESULTS_ROOT / cfg["name"]


def data_dir(cfg: dict) -> Path:
    return PREPARED_ROOT / cfg["name"]


def inside(path, root) -> bool:
    """Whether `path` stays inside `root` once '..' and symlinks in the existing part are resolved."""
    path, root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return path == root or root in path.parents


def owned(path, cfg: dict) -> str:
    """`path` itself, once checked to be one of the config's outputs; else a ConfigError naming it."""
    roots = (results_dir(cfg), data_dir(cfg), LATEST_TABLES)
    if any(inside(path, root) and Path(os.path.realpath(path)) != Path(os.path.realpath(root)) for root in roots):
        return str(path)
    if os.path.realpath(path) == os.path.realpath(f"{data_dir(cfg)}.dvc"):
        return str(path)
    raise ConfigError(
        f"output '{path}' of config '{cfg['name']}' is outside {results_dir(cfg)}/, {data_dir(cfg)}/ and "
        f"{LATEST_TABLES}/: refused"
    )


_WILDCARD = re.compile(r"\{\s*(\w+)\s*(?:,\s*((?:[^{}]+|\{\d+(?:,\d+)?\})*))?\s*\}")
_LITERAL = re.compile(r"(?:[^|\\\[\](){}*+?^$.]|\\.)+")


def pattern_examples(pattern: str) -> list[str]:
    """The paths a Snakemake output pattern can stand for, as far as they matter for where it writes: a wildcard whose
    inline constraint lists literal alternatives (`{tables,data/prepared/x|results/x/m/data}`) is each of them; any
    other wildcard a plain name."""
    match = _WILDCARD.search(pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    constraint = match.group(2)
    choices = ["w"]
    if constraint and all(_LITERAL.fullmatch(part) for part in constraint.split("|")):
        choices = [re.sub(r"\\(.)", r"\1", part) for part in constraint.split("|")]
    return [f"{head}{choice}{rest}" for choice in choices for rest in pattern_examples(tail)]


def check_rule_outputs(rules, cfg: dict) -> None:
    """Every rule writes under results/<name>/ or data/prepared/<name>/ only (names are plain; this is the net): a
    ConfigError naming the rule and the output otherwise."""
    for rule in rules:
        for output in rule.output:
            for path in pattern_examples(output):
                try:
                    owned(path, cfg)
                except ConfigError as exc:
                    raise ConfigError(f"rule {rule.name}: {exc}") from None
