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
from rpo import io, paper
from rpo.report import diagnosis, optimum, paired
from rpo.report.inputs import Inputs, across_seeds, degenerate_note, win_rate_cells, zero_share

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
            row = [model, _name(method) + degenerate_note(zero_share(inputs, model, method, "default"))]
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
        "Test prompts (the held-out prompts less the dev split). Reference row: the policy every method starts "
        "from, generated and scored the same way. BERTScore and ROUGE-L against each prompt's best completion. True "
        "reward (T=1): per-prompt mean over generate.samples_per_prompt plain samples; the other columns: the "
        "configured decoding. Cells: mean over seeds [95% interval counting seeds and prompts: mean +- z sqrt(var "
        "across seeds / S + mean per-seed bootstrap variance); one seed: its bootstrap over prompts]. Rankings: the "
        "paired table. "
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
                labels[ablation] + degenerate_note(zero_share(inputs, model, "rpo", ablation)),
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


def resolved_text(value: float, ci: tuple) -> str:
    """A paired difference's verdict: resolved when its interval excludes zero."""
    if not (ci[0] > 0 or ci[1] < 0):
        return "no (0 in interval)"
    return "yes: A > B" if value > 0 else "yes: A < B"


def _cell(value, ci=None) -> dict:
    ci = ci or (math.nan, math.nan)
    return dict(value=value, ci_low=ci[0], ci_high=ci[1])


def optimum_table(cfg: dict, inputs: Inputs) -> Table:
    """Per model, on the test prompts: the reference, the optimum at every beta trained with, and each policy's
    sampled true reward, gain over the reference, final KL, KL-matched regret and (RPO, DRO) share of pi*(beta)'s
    gain."""
    header = [
        "Model",
        "Policy",
        "beta",
        "True reward (T=1)",
        "Gain over reference",
        "KL to reference",
        "KL-matched regret",
        "Share of its target's gain (RPO, DRO: pi*; QRPO: pi*_q)",
        "Seeds",
    ]
    keys = ("reward", "gain", "kl", "regret", "share")
    rows, tidy, convergence, trust, landmark_rows = [], [], [], [], []

    def add(model, row, beta, cells, seeds):
        rows.append(
            [
                model,
                row,
                "-" if beta is None else f"{beta:g}",
                *(fmt(c["value"], 2, c["ci_low"], c["ci_high"]) if c else "-" for c in (cells.get(k) for k in keys)),
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

    n_samples, frontiers = None, optimum.frontier(cfg, inputs)
    for model, f in frontiers.items():
        n_samples = f["n"]
        add(
            model,
            f"Reference ({f['n']} samples per prompt)",
            None,
            dict(reward=_cell(f["reference"], f["reference_ci"]), gain=_cell(0.0), kl=_cell(0.0), regret=_cell(0.0)),
            1,
        )
        for c in f["curve"]:
            trust.append((model, c["beta"], c["kl"], c["ess"], c["trusted"]))
        for beta in config_lib.trained_betas(cfg):
            star = f["optimum"][beta]
            cells = dict(reward=_cell(star["reward"], star["reward_ci"]), gain=_cell(star["reward"] - f["reference"]))
            cells |= dict(kl=_cell(star["kl"], star["kl_ci"]), regret=_cell(0.0), share=_cell(1.0))
            add(model, "Optimum pi*" + ("" if star["trusted"] else " (untrusted: past log N / 2)"), beta, cells, 1)
            convergence += [(model, beta, *c) for c in star["convergence"]]
        for beta, star in f["quantile_optimum"].items():
            cells = dict(reward=_cell(star["reward"], star["reward_ci"]), gain=_cell(star["reward"] - f["reference"]))
            cells |= dict(kl=_cell(star["kl"], star["kl_ci"]), share=_cell(1.0))
            cells["regret"] = _cell(star["regret"])
            untrusted = "" if star["trusted"] else " (untrusted: past log N / 2)"
            add(model, "Optimum pi*_q of the quantile reward (QRPO's target)" + untrusted, beta, cells, 1)
        for size, b in f["best_of"].items():
            cells = dict(reward=_cell(b["reward"], b["reward_ci"]), gain=_cell(b["reward"] - f["reference"]))
            cells |= dict(kl=_cell(b["kl_bound"]), regret=_cell(b["regret_bound"]))
            add(
                model, f"Best-of-{size} of the reference (evaluation only; KL and regret: upper bounds)", None, cells, 1
            )
        for m in f["landmarks"]:
            landmark_rows.append(
                f"| {model} | {m['a'].upper()} - {m['b'].upper() if m['b'] == 'rpo' else m['b']} | {m['metric']} | "
                f"{fmt(m['value'], 2, *m['ci'])} | {resolved_text(m['value'], m['ci'])} |"
            )
            tidy.append(
                dict(
                    model=model,
                    row=f"{m['a']} - {m['b']}",
                    metric=f"landmark:{m['metric']}",
                    value=m["value"],
                    ci_low=m["ci"][0],
                    ci_high=m["ci"][1],
                    seeds=0,
                )
            )
        for p in f["policies"]:
            kl = across_seeds(pd.DataFrame(dict(k=0, value=p["kl_seeds"], ci_low=math.nan, ci_high=math.nan)), ["k"])
            kl = kl.iloc[0].to_dict()
            kl["ci_low"] = max(kl["ci_low"], 0.0) if p["seeds"] > 1 else math.nan  # a KL is never negative
            cells = dict(reward=_cell(p["reward"], p["reward_ci"]), gain=_cell(p["gain"], p["gain_ci"]), kl=kl)
            if p["method"] != paper.REFERENCE and not p["beyond_trusted"]:
                cells["regret"] = _cell(p["regret"], p["regret_ci"])
            if p["share"] is not None:
                cells["share"] = _cell(p["share"], p["share_ci"])
            name = optimum.label(cfg, p["method"], p["ablation"])
            name += " (its sampled evaluation)" if p["method"] == paper.REFERENCE else ""
            name += " (KL past the trusted curve)" if p["beyond_trusted"] else ""
            add(model, name + degenerate_note(p["target_zero_share"]), p["beta"], cells, p["seeds"])
    notes = [
        f"Test prompts only. True reward of plain samples (temperature 1). Reference and optimum: from {n_samples} "
        "reference samples per prompt, the optimum by self-normalised importance weights exp(r/beta) on the "
        "standardised training reward (rpo.report.optimum). Policies: their sampled evaluation; gain per prompt "
        "against the reference. KL: the per-token estimate at the end of training, on the same responses the "
        "reward is measured on. KL-matched regret: the optimum's reward at the policy's own KL (linear along the "
        "trusted part of its curve over beta) minus the policy's; '-' where the policy's KL lies past the trusted "
        "curve, and no interval where some resamples' KL lies past it. Share of its target's gain: RPO and DRO aim at "
        "pi*(beta) at their beta, QRPO at pi*_q(beta) = pi_ref exp(q/beta) / Z, q the reward's quantile among the "
        "prompt's reference samples (SFT has no beta; KTO's beta is not pi*'s); only where that target is trusted. "
        "Best-of-n: each prompt's reference samples in groups of n, the best by the true reward; its KL is the "
        "analytic bound log n - (n - 1)/n, and its regret is taken at that bound: the optimum's curve rises with KL, "
        "so the regret at its true KL is at most that (negative: above the estimated curve, itself biased low by "
        "the finite N). Cells: mean [95% interval: two-way bootstrap over seeds and "
        "prompts; KL: across seeds]. [V_hat = r ...]: the run's RPO target is identically zero on that share of "
        "its training prompts (one completion under the paper's estimator): nothing there is learned but noise.",
    ]
    if landmark_rows:
        notes += [
            "",
            "Against the landmarks, paired on the same test prompts (95% interval: two-way bootstrap over seeds and "
            "prompts; regret differences on the same resamples):",
            "",
            "| Model | A - B | Measure | Mean difference [95% interval] | Resolved |",
            "|---|---|---|---|---|",
            *landmark_rows,
        ]
    if trust:
        notes += [
            "",
            "The optimum's curve: KL(pi* || pi_ref) and the mean effective sample size 1 / sum w^2 of the importance "
            f"weights per beta. Trusted where the KL is at most log(N) / 2 = {0.5 * math.log(n_samples):.2f} nats "
            "(the weights' perplexity is at least sqrt(N)); N samples can never show more than log N.",
            "",
            "| Model | beta | KL(pi* \\|\\| pi_ref) | ESS (of N) | Trusted |",
            "|---|---|---|---|---|",
            *(f"| {m} | {b:g} | {k:.3f} | {e:.1f} | {'yes' if t else 'no'} |" for m, b, k, e, t in trust),
        ]
        tidy.extend(
            dict(
                model=m,
                row=f"Optimum pi* (beta {b:g})",
                metric=metric,
                value=v,
                ci_low=math.nan,
                ci_high=math.nan,
                seeds=1,
            )
            for m, b, k, e, t in trust
            for metric, v in (("curve_kl", k), ("ess", e), ("trusted", float(t)))
        )
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


def paired_table(cfg: dict, inputs: Inputs) -> Table:
    """Every method against the reference and every other method, each ablated method against its own default and the
    reference: paired per-prompt differences of the sampled true reward on the same prompts and seeds."""
    per_prompt = inputs.per_prompt("sampled_true_reward")
    found = paired.paired_rows(cfg, per_prompt, _model_order(cfg, per_prompt) if len(per_prompt) else [])
    header = ["Model", "Comparison (A - B)", "Mean difference [95% interval]", "Resolved", "Seeds", "Prompts"]

    def name(model, policy):
        method, ablation = policy
        return optimum.label(cfg, method, ablation) + degenerate_note(zero_share(inputs, model, method, ablation))

    rows, dev_rows, tidy = [], [], []
    for r in found:
        model = r["model"]
        text = f"{name(model, r['a'])} - {name(model, r['b'])}"
        verdict = resolved_text(r["value"], (r["ci_low"], r["ci_high"]))
        line = [model, text, fmt(r["value"], 2, r["ci_low"], r["ci_high"]), verdict, str(r["seeds"]), str(r["prompts"])]
        (rows if r["split"] == "test" else dev_rows).append(line)
        tidy.append(
            dict(
                model=model,
                row=text,
                metric=f"{r['split']}:paired_diff",
                value=r["value"],
                ci_low=r["ci_low"],
                ci_high=r["ci_high"],
                seeds=r["seeds"],
            )
        )
    notes = [
        "True reward of plain samples (temperature 1), per prompt the mean over its samples; A - B on the same test "
        "prompts and the same seeds (the reference, which no training seed changes, against every seed of the other "
        "side; a one-seed ablation against the default run of its own seed). 95% interval: the two-way bootstrap "
        "over seeds and prompts (rpo.report.paired, docs/metrics.md). Resolved: the interval excludes zero. A ranking is claimed only "
        "where this table resolves it.",
    ]
    if dev_rows:
        notes += [
            "",
            "Dev split (for choosing settings, not for claims):",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in dev_rows),
            "",
            "Test split:",
        ]
    columns = ["model", "row", "metric", "value", "ci_low", "ci_high", "seeds"]
    return Table(paper.PAIRED_TABLE, pd.DataFrame(tidy, columns=columns), header, rows, notes)


def build(cfg: dict, name: str, inputs: Inputs) -> Table:
    if name == paper.OPTIMUM_TABLE:
        return optimum_table(cfg, inputs)
    if name == paper.PAIRED_TABLE:
        return paired_table(cfg, inputs)
    if name == paper.DIAGNOSIS_TABLE:
        header, rows, notes, tidy = diagnosis.table(cfg, inputs, fmt)
        return Table(name, tidy, header, rows, notes)
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
    io.write_text(out_prefix.with_suffix(".md"), markdown)
    io.write_text(out_prefix.with_suffix(".tex"), table.latex(cfg))
    tidy = table.tidy.copy()
    tidy.insert(0, "table", name)
    tidy[["table", "model", "row", "metric", "value", "ci_low", "ci_high", "seeds"]].to_csv(
        out_prefix.with_suffix(".csv"), index=False
    )
    io.write_text(out_prefix.with_suffix(".runs.json"), json.dumps(inputs.sidecar(out_prefix, "table"), indent=2))
    return markdown
