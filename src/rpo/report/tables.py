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
from rpo.report import optimum
from rpo.report.inputs import Inputs, across_seeds, win_rate_cells

METRICS = {
    "bertscore": ("BERTScore", 3),
    "rouge_l": ("ROUGE-L", 3),
    "toxicity": ("Toxicity", 3),
    "distinct_2": ("Distinct-2", 2),
    "avg_len": ("Avg Len", 1),
    "true_reward": ("True reward", 2),
    "constraint_accuracy": ("Constraint acc.", 3),
    "sampled:true_reward": ("True reward (T=1)", 2),
}
ABLATION_METRICS = [
    "bertscore",
    "rouge_l",
    "toxicity",
    "distinct_2",
    "true_reward",
    "constraint_accuracy",
    "sampled:true_reward",
]


def _policies(cfg: dict, present) -> list[str]:
    """The reference (where it was evaluated), then the config's methods, those present in `present`."""
    return [m for m in [paper.REFERENCE, *cfg["methods"]] if m in set(present)]


def _name(method: str) -> str:
    return "Reference" if method == paper.REFERENCE else method.upper()


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


def invalid_verdicts_note(wins: pd.DataFrame) -> list[str]:
    """A note per judge that answered some pairs without a valid verdict (left out of its win rates)."""
    counts = wins.groupby("judge")["invalid"].sum() if len(wins) else {}
    return [
        f"Judge {judge}: {int(n)} pair(s) got no valid verdict in two tries; left out of its win rates."
        for judge, n in dict(counts).items()
        if n
    ]


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
        for method in _policies(cfg, cells[cells["model"] == model]["method"]):
            row = [model, _name(method)]
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
        "Held-out prompts. Reference row: the policy every method starts from, generated and scored the same way. "
        "BERTScore and ROUGE-L against each prompt's best completion. True reward (T=1): per-prompt mean over "
        "generate.samples_per_prompt plain samples; the other columns: the configured decoding. Cells: mean over "
        "seeds [95% interval: t across seeds, or the bootstrap over prompts for one seed]. "
        "WR: % of prompts where RPO beats that row's policy in both orders (ties counted apart); "
        "blank on RPO's own row. Definitions: docs/metrics.md."
    ]
    return Table("table2", tidy, header, rows, notes + invalid_verdicts_note(wins))


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
        for method in _policies(cfg, programmatic[programmatic["model"] == model]["method"]):
            mine = programmatic[(programmatic["model"] == model) & (programmatic["method"] == method)].set_index(
                "metric"
            )
            prog_rows.append(
                [
                    model,
                    _name(method),
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
    return Table("table3", tidy, header, rows, notes + invalid_verdicts_note(wins))


def ablation_table(cfg: dict, inputs: Inputs, name: str) -> Table:
    """Tables IV-VII: ablated RPO beside the default RPO, win rates against the default run of the configured
    baseline (judge.ablation_baseline)."""
    ablations = [a for a in cfg["ablations"] if paper.ablation_table(cfg, a) == name]
    labels = {a: paper.ablation_label(cfg, a, config_lib.for_ablation(cfg, a)) for a in ablations}
    labels["default"] = paper.DEFAULT_RPO_ROW
    labels[paper.REFERENCE] = "Reference"
    scores = inputs.scores()
    scores = scores[
        ((scores["method"] == "rpo") & scores["ablation"].isin(labels))
        | ((scores["method"] == paper.REFERENCE) & (scores["ablation"] == "default"))
    ]
    # the reference's row is keyed by its name rather than its (default) ablation
    scores = scores.assign(ablation=scores["ablation"].where(scores["method"] != paper.REFERENCE, paper.REFERENCE))
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
        for ablation in [*ablations, "default", paper.REFERENCE]:
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
        f"RPO under each setting, the default RPO ({paper.DEFAULT_RPO_ROW}) and the reference policy all methods "
        f"start from. WR: RPO of that row against the default {baseline.upper()} run. Cells: mean [95% interval]."
    ]
    if not ablations:
        notes.append("This config has no ablation for this table.")
    return Table(name, tidy, header, rows, notes + invalid_verdicts_note(wins))


def optimum_table(cfg: dict, inputs: Inputs) -> Table:
    """Per model: the reference, the optimum at every beta trained with, and each policy's sampled true reward, its
    gain over the reference, its share of the optimum's gain at its beta, and its final KL to the reference."""
    header = [
        "Model",
        "Policy",
        "beta",
        "True reward (T=1)",
        "Gain over reference",
        "Share of optimal gain",
        "KL to reference",
        "Seeds",
    ]
    rows, tidy, convergence = [], [], []

    def add(model, row, beta, cells, seeds):
        rows.append(
            [
                model,
                row,
                "-" if beta is None else f"{beta:g}",
                *(
                    fmt(c["value"], d, c["ci_low"], c["ci_high"]) if c else "-"
                    for c, d in zip([cells.get(k) for k in ("reward", "gain", "share", "kl")], (2, 2, 2, 2))
                ),
                str(seeds),
            ]
        )
        tidy.extend(
            dict(
                model=model, row=row, metric=k, value=c["value"], ci_low=c["ci_low"], ci_high=c["ci_high"], seeds=seeds
            )
            for k, c in cells.items()
            if c
        )

    def point(value, ci=(math.nan, math.nan)):
        return dict(value=value, ci_low=ci[0], ci_high=ci[1])

    n_samples = None
    for model, f in optimum.frontier(cfg, inputs).items():
        n_samples = f["n"]
        add(
            model,
            f"Reference ({f['n']} samples per prompt)",
            None,
            dict(reward=point(f["reference"], f["reference_ci"]), gain=point(0.0), share=point(0.0), kl=point(0.0)),
            1,
        )
        for beta in config_lib.trained_betas(cfg):
            star = f["optimum"][beta]
            add(
                model,
                "Optimum pi*",
                beta,
                dict(
                    reward=point(star["reward"], star["reward_ci"]),
                    gain=point(star["reward"] - f["reference"]),
                    share=point(1.0),
                    kl=point(star["kl"], star["kl_ci"]),
                ),
                1,
            )
            convergence += [(model, beta, *c) for c in star["convergence"]]
        for p in f["policies"]:
            cells = {k: optimum.seed_cell(p["seeds"], k) for k in ("reward", "gain", "share")}
            if p["kl"]:  # a KL is never negative, nor is its interval
                kl = pd.DataFrame(dict(k=0, value=p["kl"], ci_low=math.nan, ci_high=math.nan))
                cells["kl"] = across_seeds(kl, ["k"]).iloc[0].to_dict()
                cells["kl"]["ci_low"] = max(cells["kl"]["ci_low"], 0.0)
            add(model, optimum.label(cfg, p["method"], p["ablation"]), p["beta"], cells, len(p["seeds"]))
    notes = [
        f"True reward of plain samples (temperature 1) on the held-out prompts. Reference and optimum: from "
        f"{n_samples} reference samples per prompt, the optimum by self-normalised importance weights "
        "exp(r/beta) on the standardised training reward (rpo.report.optimum). Policies: their sampled "
        "evaluation; gain and share per prompt against the reference, share = gain / (optimum - reference) at "
        "the policy's beta (SFT: the default beta). KL: the per-token estimate at the end of training. "
        "Cells: mean [95% interval: t across seeds, or the bootstrap over prompts for one seed]."
    ]
    if convergence:
        notes += [
            "",
            "The optimum's estimate against the number of reference samples per prompt N (finite-N bias: "
            "both columns grow towards their limit):",
            "",
            "| Model | beta | N | Optimum true reward | KL(pi* \\|\\| pi_ref) |",
            "|---|---|---|---|---|",
            *(f"| {m} | {b:g} | {n} | {r:.3f} | {k:.3f} |" for m, b, n, r, k in convergence),
            "",
            "Policies:",
        ]
    columns = ["model", "row", "metric", "value", "ci_low", "ci_high", "seeds"]
    return Table(paper.OPTIMUM_TABLE, pd.DataFrame(tidy, columns=columns), header, rows, notes)


def build(cfg: dict, name: str, inputs: Inputs) -> Table:
    if name == paper.OPTIMUM_TABLE:
        return optimum_table(cfg, inputs)
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
