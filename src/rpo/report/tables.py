"""Tables II-VII (Markdown, CSV, LaTeX), each with a sidecar `<name>.runs.json` of the MLflow run ids and md5s of
every file it was made from. CSVs are tidy (one row per model x row x metric, with the 95% interval); Markdown and
LaTeX are the wide views a reader expects. Titles and the ablation-to-table map come from rpo.paper.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from rpo import config as config_lib
from rpo import paper
from rpo.report.inputs import Inputs, across_seeds, win_rate_cells

METRICS = {
    "bertscore": ("BERTScore", 3),
    "rouge_l": ("ROUGE-L", 3),
    "toxicity": ("Toxicity", 3),
    "distinct_2": ("Distinct-2", 2),
    "avg_len": ("Avg Len", 1),
    "true_reward": ("True reward", 2),
    "constraint_accuracy": ("Constraint acc.", 3),
}
ABLATION_METRICS = ["bertscore", "rouge_l", "toxicity", "distinct_2", "true_reward", "constraint_accuracy"]


def fmt(value: float, digits: int, lo: float = math.nan, hi: float = math.nan) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.{digits}f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


class Table:
    """A tidy table (CSV) and its wide view (Markdown, LaTeX)."""

    def __init__(self, name: str, tidy: pd.DataFrame, header: list[str], rows: list[list[str]], notes: list[str]):
        self.name, self.tidy, self.header, self.rows, self.notes = name, tidy, header, rows, notes

    def markdown(self, cfg: dict) -> str:
        lines = [
            f"# {paper.title(self.name, cfg)} (config `{cfg['name']}`)",
            "",
            *self.notes,
            "",
            "| " + " | ".join(self.header) + " |",
            "|" + "---|" * len(self.header),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def latex(self, cfg: dict) -> str:
        def esc(text: str) -> str:
            for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
                text = text.replace(a, b)
            return text

        lines = [
            r"\begin{table}[t]",
            r"\centering",
            r"\small",
            rf"\caption{{{esc(paper.title(self.name, cfg))} (config \texttt{{{esc(cfg['name'])}}}).}}",
            rf"\label{{tab:{self.name}}}",
            r"\begin{tabular}{" + "l" * 2 + "r" * (len(self.header) - 2) + "}",
            r"\toprule",
            " & ".join(esc(h) for h in self.header) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(esc(c) for c in row) + r" \\" for row in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"


def _model_order(cfg: dict, frame: pd.DataFrame) -> list[str]:
    return [m for m in cfg["models"] if m in set(frame["model"])]


def _judges(winrates: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(winrates["judge"]))


def table2(cfg: dict, inputs: Inputs) -> Table:
    scores = inputs.scores()
    scores = scores[scores["ablation"] == "default"]
    metrics = [m for m in METRICS if m in set(scores["metric"])]
    cells = across_seeds(scores, ["model", "method", "metric"])
    wins = inputs.winrates()
    wins = wins[(wins["ablation"] == "default") & (wins["scope"] == "in_domain")]
    wr = win_rate_cells(wins, ["model", "baseline", "judge"])
    judges = _judges(wins)
    header = ["Model", "Method", *(METRICS[m][0] for m in metrics), *(f"{j} WR" for j in judges), "Seeds"]
    rows = []
    for model in _model_order(cfg, cells):
        for method in [m for m in cfg["methods"] if m in set(cells[cells["model"] == model]["method"])]:
            row = [model, method.upper()]
            mine = cells[(cells["model"] == model) & (cells["method"] == method)].set_index("metric")
            for metric in metrics:
                c = mine.loc[metric]
                row.append(fmt(c["value"], METRICS[metric][1], c["ci_low"], c["ci_high"]))
            for judge in judges:
                c = wr[(wr["model"] == model) & (wr["baseline"] == method) & (wr["judge"] == judge)]
                row.append(fmt(c["value"].iloc[0], 1, c["ci_low"].iloc[0], c["ci_high"].iloc[0]) if len(c) else "-")
            row.append(str(int(mine["seeds"].max())))
            rows.append(row)
    tidy = pd.concat(
        [
            cells.rename(columns={"method": "row"}),
            wr.assign(metric="wr:" + wr["judge"]).rename(columns={"baseline": "row"}).drop(columns="judge"),
        ]
    )
    notes = [
        "Held-out prompts; reference: each prompt's best completion. Cells: mean over seeds "
        "[95% interval: t across seeds, or the bootstrap over prompts for one seed]. "
        "WR: % of prompts where RPO beats that row's baseline in both orders (ties counted apart); "
        "blank on RPO's own row. Definitions: docs/metrics.md."
    ]
    return Table("table2", tidy, header, rows, notes)


def table3(cfg: dict, inputs: Inputs) -> Table:
    wins = inputs.winrates()
    wins = wins[(wins["ablation"] == "default") & (wins["scope"] != "in_domain")]
    wr = win_rate_cells(wins, ["model", "baseline", "judge", "scope"])
    judges, benches = _judges(wins), list(cfg["ood"]["benchmarks"])
    columns = [(j, b) for j in judges for b in benches if len(wr[(wr["judge"] == j) & (wr["scope"] == b)])]
    header = ["Model", "Baseline", *(f"{j} {b}" for j, b in columns)]
    rows = []
    for model in _model_order(cfg, wr) if len(wr) else []:
        for baseline in [m for m in cfg["methods"] if m in set(wr[wr["model"] == model]["baseline"])]:
            row = [model, baseline.upper()]
            for judge, bench in columns:
                c = wr[
                    (wr["model"] == model)
                    & (wr["baseline"] == baseline)
                    & (wr["judge"] == judge)
                    & (wr["scope"] == bench)
                ]
                row.append(fmt(c["value"].iloc[0], 1, c["ci_low"].iloc[0], c["ci_high"].iloc[0]) if len(c) else "-")
            rows.append(row)
    programmatic = across_seeds(inputs.ood_scores(), ["model", "method", "metric"])
    score_cols = list(dict.fromkeys(programmatic["metric"]))
    prog_rows = []
    for model in _model_order(cfg, programmatic) if len(programmatic) else []:
        for method in [m for m in cfg["methods"] if m in set(programmatic[programmatic["model"] == model]["method"])]:
            mine = programmatic[(programmatic["model"] == model) & (programmatic["method"] == method)].set_index(
                "metric"
            )
            prog_rows.append(
                [
                    model,
                    method.upper(),
                    *(
                        fmt(mine.loc[c, "value"], 1, mine.loc[c, "ci_low"], mine.loc[c, "ci_high"])
                        if c in mine.index
                        else "-"
                        for c in score_cols
                    ),
                ]
            )
    notes = [
        "Win rates of RPO against each baseline by each judge on each benchmark (both orders; ties apart).",
        "Benchmarks a judge cannot judge (the oracle outside the synthetic world) are left out.",
    ]
    if not benches:
        notes.append("This config has no out-of-distribution benchmarks (ood.benchmarks).")
    if prog_rows:
        notes += [
            "",
            "Programmatic scores (%), per method:",
            "",
            "| " + " | ".join(["Model", "Method", *(c.replace(":", " ") for c in score_cols)]) + " |",
            "|" + "---|" * (len(score_cols) + 2),
            *("| " + " | ".join(r) + " |" for r in prog_rows),
            "",
            "Win rates:",
        ]
    tidy = pd.concat(
        [
            wr.assign(metric="wr:" + wr["judge"] + ":" + wr["scope"])
            .rename(columns={"baseline": "row"})
            .drop(columns=["judge", "scope"]),
            programmatic.rename(columns={"method": "row"}),
        ]
    )
    return Table("table3", tidy, header, rows, notes)


def ablation_table(cfg: dict, inputs: Inputs, name: str) -> Table:
    """Tables IV-VII: ablated RPO beside the default RPO, win rates against the default run of the configured
    baseline (judge.ablation_baseline)."""
    ablations = [a for a in cfg["ablations"] if paper.ablation_table(cfg, a) == name]
    labels = {a: paper.ablation_label(cfg, a, config_lib.for_ablation(cfg, a)) for a in ablations}
    labels["default"] = paper.DEFAULT_RPO_ROW
    scores = inputs.scores()
    scores = scores[(scores["method"] == "rpo") & scores["ablation"].isin(labels)]
    metrics = [m for m in ABLATION_METRICS if m in set(scores["metric"])]
    cells = across_seeds(scores, ["model", "ablation", "metric"])
    wins = inputs.winrates()
    baseline = cfg["judge"]["ablation_baseline"]
    wins = wins[wins["ablation"].isin(labels) & (wins["scope"] == "in_domain") & (wins["baseline"] == baseline)]
    wr = win_rate_cells(wins, ["model", "ablation", "judge"])
    judges = _judges(wins)
    header = ["Model", "Setting", *(METRICS[m][0] for m in metrics), *(f"{j} WR" for j in judges), "Seeds"]
    rows = []
    for model in _model_order(cfg, cells) if len(cells) else []:
        for ablation in [*ablations, "default"]:
            mine = cells[(cells["model"] == model) & (cells["ablation"] == ablation)].set_index("metric")
            if mine.empty:
                continue
            row = [
                model,
                labels[ablation],
                *(
                    fmt(mine.loc[m, "value"], METRICS[m][1], mine.loc[m, "ci_low"], mine.loc[m, "ci_high"])
                    for m in metrics
                ),
            ]
            for judge in judges:
                c = wr[(wr["model"] == model) & (wr["ablation"] == ablation) & (wr["judge"] == judge)]
                row.append(fmt(c["value"].iloc[0], 1, c["ci_low"].iloc[0], c["ci_high"].iloc[0]) if len(c) else "-")
            rows.append(row + [str(int(mine["seeds"].max()))])
    tidy = pd.concat([cells, wr.assign(metric="wr:" + wr["judge"]).drop(columns="judge")])
    tidy["row"] = tidy.pop("ablation").map(labels)
    notes = [
        f"RPO under each setting, and the default RPO ({paper.DEFAULT_RPO_ROW}). WR: RPO of that row against the "
        f"default {baseline.upper()} run. Cells: mean [95% interval]."
    ]
    if not ablations:
        notes.append("This config has no ablation for this table.")
    return Table(name, tidy, header, rows, notes)


def build(cfg: dict, name: str, inputs: Inputs) -> Table:
    if name == "table2":
        return table2(cfg, inputs)
    if name == "table3":
        return table3(cfg, inputs)
    return ablation_table(cfg, inputs, name)


def write_table(cfg: dict, name: str, paths: list[str], out_prefix) -> str:
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(paths)
    table = build(cfg, name, inputs)
    markdown = table.markdown(cfg)
    out_prefix.with_suffix(".md").write_text(markdown)
    out_prefix.with_suffix(".tex").write_text(table.latex(cfg))
    tidy = table.tidy.copy()
    tidy.insert(0, "table", name)
    tidy[["table", "model", "row", "metric", "value", "ci_low", "ci_high", "seeds"]].to_csv(
        out_prefix.with_suffix(".csv"), index=False
    )
    out_prefix.with_suffix(".runs.json").write_text(json.dumps(inputs.sidecar(out_prefix, "table"), indent=2))
    return markdown
