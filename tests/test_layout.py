"""The package's layout: no import cycles among rpo modules (counting imports inside functions too), rpo modules
imported at module top everywhere but the CLI's per-step dispatch, and the paper's outputs named in one place."""

import ast
import re
from pathlib import Path

import pytest
from conftest import REPO

from rpo import paper

PACKAGE = REPO / "src" / "rpo"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(node) -> list[str]:
    """The rpo modules an import statement loads (`from rpo.x import y` loads rpo.x.y when y is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "rpo"]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "rpo":
        return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names]
    return []


def import_graph() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """module -> rpo modules it imports; and module -> rpo modules it imports inside a function."""
    graph, nested = {}, {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        graph[name] = set()
        for node in ast.walk(tree):
            for target in imported_modules(node):
                graph[name].add(target)
                if id(node) not in top:
                    nested.setdefault(name, []).append(target)
    return graph, nested


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_rpo_modules():
    graph, _ = import_graph()
    assert len(graph) > 30 and graph["rpo.train.loop"] >= {"rpo.train.objectives", "rpo.models.build"}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_rpo_modules_are_imported_at_module_top_except_by_the_cli_dispatch():
    _, nested = import_graph()
    assert set(nested) <= {"rpo.cli"}, {k: v for k, v in nested.items() if k != "rpo.cli"}


@pytest.mark.parametrize("stage", ["data", "reference", "train", "evaluate", "report"])
def test_each_stage_package_mirrors_a_rule_file(stage):
    assert (PACKAGE / stage / "__init__.py").is_file()
    assert (REPO / "workflow" / "rules" / f"{stage}.smk").is_file()


def test_the_paper_tables_are_named_in_one_place():
    """No other module, rule file or test spells out the list of tables; the titles follow the configured baseline."""
    spelled = re.compile(r"table2.{0,40}table3.{0,40}table4", re.S)
    files = [*PACKAGE.rglob("*.py"), *(REPO / "workflow").rglob("*.smk"), REPO / "Snakefile"]
    offenders = [str(f) for f in files if f.name != "paper.py" and spelled.search(f.read_text())]
    assert not offenders
    assert paper.TABLES == ["table2", "table3", "table4", "table5", "table6", "table7"]
    cfg = {"judge": {"ablation_baseline": "kto"}}
    assert paper.title("table4", cfg).endswith("(win rates against KTO)")


def test_a_new_ablation_table_is_one_entry_in_paper(tmp_path, monkeypatch, micro_config):
    """Defined only in rpo.paper: configs accept it, ablations that match it land in it, the report builds it."""
    import json

    from rpo import config
    from rpo.report import tables

    entry = paper.AblationTable(
        "Table VIII: RPO with other learning rates (win rates against {baseline})",
        lambda spec: "lr" in spec.get("train", {}),
        lambda cfg: f"lr={cfg['train']['lr']:g}",
    )
    monkeypatch.setitem(paper.ABLATION_TABLES, "table8", entry)
    micro_config["ablations"] = {"default": {}, "lr": {"methods": ["rpo"], "train": {"lr": 0.01}}}
    cfg = config.resolve(micro_config)
    assert paper.ablation_table(cfg, "lr") == "table8"
    assert config.resolve({**micro_config, "ablations": {"default": {}, "x": {"table": "table8"}}})
    paths = []
    for ablation, value in (("lr", 0.5), ("default", 0.25)):
        path = tmp_path / ablation / "scores.json"
        path.parent.mkdir()
        path.write_text(
            json.dumps(
                {
                    "model": "t5",
                    "method": "rpo",
                    "ablation": ablation,
                    "seed": 0,
                    "metrics": {"rouge_l": value},
                    "ci": {"rouge_l": [value - 0.1, value + 0.1]},
                }
            )
        )
        paths.append(str(path))
    markdown = tables.write_table(cfg, "table8", paths, tmp_path / "table8")
    assert markdown.startswith("# Table VIII: RPO with other learning rates (win rates against SFT)")
    assert "| t5 | lr=0.01 | 0.500 [0.400, 0.600] | 1 |" in markdown and "| t5 | RPO (ref.) | 0.250" in markdown


# `rpo` steps that load a model without a --model-dir/--init flag naming it: init-model builds or converts one,
# score runs BERTScore and the toxicity classifier.
MODEL_STEPS_WITHOUT_A_MODEL_FLAG = {"init-model", "score"}


def _rules_and_steps() -> dict[str, str]:
    """Every rule of the workflow and the `rpo` step its shell runs ('' for rules that run none)."""
    rules = {}
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule )", path.read_text(), flags=re.M)[1:]:
            name = re.match(r"rule (\w+):", block).group(1)
            step = re.search(r'rpo_step\(\s*f?"(\S+)', block)
            rules[name] = step.group(1) if step else ""
    return rules


def test_the_slurm_profile_gives_resources_to_every_rule_that_runs_a_model():
    """reference_samples ran on default resources (4 GB, no GPU) for two issues after it was added."""
    import yaml

    from rpo.cli import build_parser

    flags = {
        name: {a for action in sub._actions for a in action.option_strings}
        for name, sub in build_parser()._subparsers._group_actions[0].choices.items()
    }
    model_steps = MODEL_STEPS_WITHOUT_A_MODEL_FLAG | {s for s, f in flags.items() if f & {"--model-dir", "--init"}}
    rules = _rules_and_steps()
    runs_a_model = sorted(rule for rule, step in rules.items() if step in model_steps)
    assert {"train", "generate", "reference_samples", "diagnose", "init_model"} <= set(runs_a_model)
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())["set-resources"]
    missing = [rule for rule in runs_a_model if rule not in profile or "mem_mb" not in profile[rule]]
    assert not missing, f"profiles/slurm/config.yaml has no resources for {missing}"
    assert not set(profile) - set(rules), "resources for rules that do not exist"
