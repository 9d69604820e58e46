"""The paper's outputs, named once: its tables and their titles, its figures, the baselines RPO is judged
against, which table an ablation reports in and its row label there, and the values the paper reports.

Read by the workflow (workflow/rules/common.smk), the CLI and the report; adding a table starts here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# The paper's reported cells (Tables II-VII), shipped with the package: table, model, row, metric, value.
PAPER_CSV = Path(__file__).with_name("paper_reported.csv")

BASELINES = ("sft", "kto", "dro")
# Beyond the paper: methods whose objective reads reference rewards per training prompt (QRPO's quantiles); the
# registry entry says the same (Objective.needs_reference_rewards), this name keeps torch out of the workflow.
REFERENCE_REWARD_METHODS = ("qrpo",)
# The policy every method starts from, evaluated and judged like a method: its row in every table.
REFERENCE = "reference"

MAIN_TABLES = {
    "table2": "Table II: in-domain metrics and win rates of RPO against each baseline",
    "table3": "Table III: out-of-distribution win rates of RPO against each baseline, and programmatic scores",
}


@dataclass(frozen=True)
class AblationTable:
    """A table of RPO under one kind of ablation, beside the default RPO."""

    title: str  # {baseline}: the configured judge.ablation_baseline
    matches: Callable[[dict], bool]  # does an ablation's override belong here (when it names no `table`)
    label: Callable[[dict], str]  # its row label, from the ablation's merged config


# In order of precedence: an override that turns V_hat off is Table V whatever else it changes.
ABLATION_TABLES = {
    "table5": AblationTable(
        "Table V: RPO without the empirical value V_hat (win rates against {baseline})",
        lambda spec: spec.get("objective", {}).get("rpo", {}).get("estimator") == "none",
        lambda cfg: "w/o V_hat",
    ),
    "table4": AblationTable(
        "Table IV: RPO with other beta (win rates against {baseline})",
        lambda spec: "beta" in spec.get("objective", {}),
        lambda cfg: f"beta={cfg['objective']['beta']:g}",
    ),
    "table6": AblationTable(
        "Table VI: completion density for partition estimation (win rates against {baseline})",
        lambda spec: "density" in spec.get("data", {}),
        lambda cfg: f"{100 * cfg['data']['density']:g}%",
    ),
    "table7": AblationTable(
        "Table VII: Gaussian noise on the training rewards (win rates against {baseline})",
        lambda spec: "noise" in spec.get("data", {}),
        lambda cfg: f"sigma={cfg['data']['noise']:g}",
    ),
}

TABLES = sorted([*MAIN_TABLES, *ABLATION_TABLES])
# Beyond the paper, where the reward can be computed (config.optimum_enabled): how close each method gets to the
# KL-regularised optimum it aims at (Table "optimum"), and the reward-KL frontier (Figure 3).
OPTIMUM_TABLE = "optimum"
# Every method against the reference and each other on paired per-prompt differences: what rankings are claimed on.
PAIRED_TABLE = "paired"
# Where each policy loses the optimum's gain: training prompts against test prompts, and the regression's fit.
DIAGNOSIS_TABLE = "diagnosis"
OPTIMUM_TABLES = (OPTIMUM_TABLE, PAIRED_TABLE, DIAGNOSIS_TABLE)
OPTIMUM_TITLES = {
    OPTIMUM_TABLE: "Beyond the paper: true reward against the KL-regularised optimum, KL-matched regret and share of "
    "its gain",
    PAIRED_TABLE: "Beyond the paper: paired differences in true reward between every two policies (test prompts)",
    DIAGNOSIS_TABLE: "Beyond the paper: where each policy loses the optimum's gain (training against test prompts)",
}
FIGURES = {
    "figure1": "figure1_training_time",
    "figure2": "figure2_kl",
    "figure3": "figure3_frontier",
    "figure4": "figure4_diagnosis",
}
OPTIMUM_FIGURES = ("figure3", "figure4")
# Row label of the default RPO in the ablation tables.
DEFAULT_RPO_ROW = "RPO (ref.)"


def title(name: str, cfg: dict) -> str:
    if name in OPTIMUM_TITLES:
        return OPTIMUM_TITLES[name]
    if name in MAIN_TABLES:
        return MAIN_TABLES[name]
    return ABLATION_TABLES[name].title.format(baseline=cfg["judge"]["ablation_baseline"].upper())


def ablation_table(cfg: dict, name: str) -> str | None:
    """Which table an ablation reports in: its `table` key, or what its override changes (None: the default runs)."""
    spec = cfg["ablations"][name]
    if name == "default":
        return None
    if spec.get("table"):
        return spec["table"]
    return next((table for table, kind in ABLATION_TABLES.items() if kind.matches(spec)), None)


def ablation_label(cfg: dict, name: str, merged: dict) -> str:
    """An ablation's row label: its `label` key, or what its table shows of its merged config (else its name)."""
    spec = cfg["ablations"][name]
    if spec.get("label"):
        return spec["label"]
    table = ablation_table(cfg, name)
    return ABLATION_TABLES[table].label(merged) if table else name
