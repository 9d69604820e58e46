"""Tables II-VII (Markdown, CSV, LaTeX), Figures 1-2 (PNG, PDF) and the comparison with the paper.

Every output has a sidecar `<name>.runs.json` listing the MLflow run ids and the md5 of every file it was made
from. CSVs are tidy (one row per model x row x metric, with the 95% interval), Markdown and LaTeX are the wide
views a reader expects. Across seeds a cell is the mean of the per-seed values; its interval is the Student-t
interval across seeds (3+ seeds) or, for one seed, that seed's bootstrap interval over prompts.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from rpo import config as config_lib

METRICS = {"bertscore": ("BERTScore", 3), "rouge_l": ("ROUGE-L", 3), "toxicity": ("Toxicity", 3),
           "distinct_2": ("Distinct-2", 2), "avg_len": ("Avg Len", 1), "true_reward": ("True reward", 2),
           "constraint_accuracy": ("Constraint acc.", 3)}
ABLATION_METRICS = ["bertscore", "rouge_l", "toxicity", "distinct_2", "true_reward", "constraint_accuracy"]
OOD_SCORES = ("prompt_strict", "prompt_loose", "instruction_strict", "instruction_loose", "exact_match")
TITLES = {
    "table2": "Table II: in-domain metrics and win rates of RPO against each baseline",
    "table3": "Table III: out-of-distribution win rates of RPO against each baseline, and programmatic scores",
    "table4": "Table IV: RPO with other beta (win rates against SFT)",
    "table5": "Table V: RPO without the empirical value V_hat (win rates against SFT)",
    "table6": "Table VI: completion density for partition estimation (win rates against SFT)",
    "table7": "Table VII: Gaussian noise on the training rewards (win rates against SFT)",
}
REFERENCE_ROW = "RPO (ref.)"


def md5(path) -> str:
    from rpo.data import md5 as file_md5

    return file_md5(path)


# ----------------------------------------------------------------------------- inputs

class Inputs:
    """The per-run files a report is made from, sorted by kind; remembers their MLflow run ids and md5s."""

    def __init__(self, paths: list[str]):
        self.paths = [Path(p) for p in paths]
        self.run_ids: set[str] = set()
        self.offline = 0

    def _read(self, path: Path) -> dict:
        record = json.loads(path.read_text())
        if record.get("mlflow_run_id"):
            self.run_ids.add(record["mlflow_run_id"])
        else:
            self.offline += 1
        return record

    def of(self, name: str) -> list[Path]:
        return [p for p in self.paths if p.name == name]

    def scores(self) -> pd.DataFrame:
        rows = []
        for path in self.of("scores.json"):
            s = self._read(path)
            for metric, value in s["metrics"].items():
                lo, hi = s.get("ci", {}).get(metric, (math.nan, math.nan))
                rows.append(dict(model=s["model"], method=s["method"], ablation=s["ablation"], seed=s["seed"],
                                 metric=metric, value=value, ci_low=lo, ci_high=hi))
        return pd.DataFrame(rows, columns=["model", "method", "ablation", "seed", "metric", "value", "ci_low", "ci_high"])

    def winrates(self) -> pd.DataFrame:
        rows = []
        for path in [p for p in self.paths if "_rpo_vs_" in p.name]:
            w = self._read(path)
            scopes = [("in_domain", w["in_domain"])] + [(bench, by) for bench, by in w["ood"].items()]
            for scope, by_baseline in scopes:
                for baseline, r in by_baseline.items():
                    rows.append(dict(model=w["model"], ablation=w["ablation"], seed=w["seed"], judge=w["judge"],
                                     scope=scope, baseline=baseline, value=r["win"], tie=r["tie"], loss=r["loss"],
                                     ci_low=r["win_ci"][0], ci_high=r["win_ci"][1]))
        return pd.DataFrame(rows, columns=["model", "ablation", "seed", "judge", "scope", "baseline", "value", "tie",
                                           "loss", "ci_low", "ci_high"])

    def ood_scores(self) -> pd.DataFrame:
        rows = []
        for path in self.of("ood_scores.json"):
            s = self._read(path)
            for bench, scores in s["benchmarks"].items():
                for key, value in scores.items():
                    if key in OOD_SCORES and value is not None:
                        rows.append(dict(model=s["model"], method=s["method"], seed=s["seed"], metric=f"{bench}:{key}",
                                         value=value, ci_low=math.nan, ci_high=math.nan))
        return pd.DataFrame(rows, columns=["model", "method", "seed", "metric", "value", "ci_low", "ci_high"])

    def training(self) -> pd.DataFrame:
        rows = []
        for path in self.of("train.json"):
            t = self._read(path)
            rows.append(dict(model=t["model"], method=t["method"], ablation=t["ablation"], seed=t["seed"],
                             hours=t["wall_time_s"] / 3600, folder=str(path.parent)))
        return pd.DataFrame(rows)

    def kl(self) -> pd.DataFrame:
        frames = []
        for path in self.of("kl.csv"):
            parts = path.parts  # .../<model>/<method>/<ablation>/seed<seed>/kl.csv
            frame = pd.read_csv(path)
            frame["model"], frame["method"], frame["ablation"], frame["seed"] = parts[-5], parts[-4], parts[-3], parts[-2]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step", "kl", "model", "method"])

    def sidecar(self, out_prefix: Path, kind: str) -> dict:
        return {kind: out_prefix.name, "mlflow_run_ids": sorted(self.run_ids),
                "runs_recorded_offline": self.offline, "inputs": {str(p): md5(p) for p in self.paths}}


# ----------------------------------------------------------------------------- aggregation

def across_seeds(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over seeds; a t-interval across seeds when there are several, else the single seed's interval."""
    from scipy import stats

    out = []
    for key, group in frame.groupby(keys, sort=False):
        values = group["value"].to_numpy(dtype=float)
        n = len(values)
        mean = float(values.mean())
        if n >= 2:
            half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
            lo, hi = mean - half, mean + half
        else:
            lo, hi = float(group["ci_low"].iloc[0]), float(group["ci_high"].iloc[0])
        out.append(dict(zip(keys, key if isinstance(key, tuple) else (key,))) | dict(value=mean, ci_low=lo, ci_high=hi,
                                                                                      seeds=n))
    return pd.DataFrame(out, columns=[*keys, "value", "ci_low", "ci_high", "seeds"])


def win_rate_cells(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Win rates across seeds, the interval clipped to [0, 100] (a t-interval over few seeds can overshoot)."""
    cells = across_seeds(frame, keys)
    cells[["ci_low", "ci_high"]] = cells[["ci_low", "ci_high"]].clip(0.0, 100.0)
    return cells


def fmt(value: float, digits: int, lo: float = math.nan, hi: float = math.nan) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.{digits}f}"
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


# ----------------------------------------------------------------------------- tables

class Table:
    """A tidy table (CSV) and its wide view (Markdown, LaTeX)."""

    def __init__(self, name: str, tidy: pd.DataFrame, header: list[str], rows: list[list[str]], notes: list[str]):
        self.name, self.tidy, self.header, self.rows, self.notes = name, tidy, header, rows, notes

    def markdown(self, cfg: dict) -> str:
        lines = [f"# {TITLES[self.name]} (config `{cfg['name']}`)", "", *self.notes, "",
                 "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def latex(self, cfg: dict) -> str:
        def esc(text: str) -> str:
            for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
                text = text.replace(a, b)
            return text

        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 rf"\caption{{{esc(TITLES[self.name])} (config \texttt{{{esc(cfg['name'])}}}).}}",
                 rf"\label{{tab:{self.name}}}", r"\begin{tabular}{" + "l" * 2 + "r" * (len(self.header) - 2) + "}",
                 r"\toprule", " & ".join(esc(h) for h in self.header) + r" \\", r"\midrule"]
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
    tidy = pd.concat([cells.rename(columns={"method": "row"}),
                      wr.assign(metric="wr:" + wr["judge"]).rename(columns={"baseline": "row"}).drop(columns="judge")])
    notes = ["Held-out prompts; reference: each prompt's best completion. Cells: mean over seeds "
             "[95% interval: t across seeds, or the bootstrap over prompts for one seed]. "
             "WR: % of prompts where RPO beats that row's baseline in both orders (ties counted apart); "
             "blank on RPO's own row. Definitions: docs/metrics.md."]
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
                c = wr[(wr["model"] == model) & (wr["baseline"] == baseline) & (wr["judge"] == judge) & (wr["scope"] == bench)]
                row.append(fmt(c["value"].iloc[0], 1, c["ci_low"].iloc[0], c["ci_high"].iloc[0]) if len(c) else "-")
            rows.append(row)
    programmatic = across_seeds(inputs.ood_scores(), ["model", "method", "metric"])
    score_cols = list(dict.fromkeys(programmatic["metric"]))
    prog_rows = []
    for model in _model_order(cfg, programmatic) if len(programmatic) else []:
        for method in [m for m in cfg["methods"] if m in set(programmatic[programmatic["model"] == model]["method"])]:
            mine = programmatic[(programmatic["model"] == model) & (programmatic["method"] == method)].set_index("metric")
            prog_rows.append([model, method.upper(), *(fmt(mine.loc[c, "value"], 1, mine.loc[c, "ci_low"], mine.loc[c, "ci_high"])
                                                        if c in mine.index else "-" for c in score_cols)])
    notes = ["Win rates of RPO against each baseline by each judge on each benchmark (both orders; ties apart).",
             "Benchmarks a judge cannot judge (the oracle outside the synthetic world) are left out."]
    if not benches:
        notes.append("This config has no out-of-distribution benchmarks (ood.benchmarks).")
    if prog_rows:
        notes += ["", "Programmatic scores (%), per method:", "",
                  "| " + " | ".join(["Model", "Method", *(c.replace(":", " ") for c in score_cols)]) + " |",
                  "|" + "---|" * (len(score_cols) + 2), *("| " + " | ".join(r) + " |" for r in prog_rows),
                  "", "Win rates:"]
    tidy = pd.concat([wr.assign(metric="wr:" + wr["judge"] + ":" + wr["scope"]).rename(columns={"baseline": "row"})
                      .drop(columns=["judge", "scope"]), programmatic.rename(columns={"method": "row"})])
    return Table("table3", tidy, header, rows, notes)


def ablation_table(cfg: dict, inputs: Inputs, name: str) -> Table:
    """Tables IV-VII: ablated RPO beside the default RPO, win rates against the default SFT."""
    ablations = [a for a in cfg["ablations"] if config_lib.ablation_table(cfg, a) == name]
    labels = {a: config_lib.ablation_label(cfg, a) for a in ablations} | {"default": REFERENCE_ROW}
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
            row = [model, labels[ablation], *(fmt(mine.loc[m, "value"], METRICS[m][1], mine.loc[m, "ci_low"],
                                                  mine.loc[m, "ci_high"]) for m in metrics)]
            for judge in judges:
                c = wr[(wr["model"] == model) & (wr["ablation"] == ablation) & (wr["judge"] == judge)]
                row.append(fmt(c["value"].iloc[0], 1, c["ci_low"].iloc[0], c["ci_high"].iloc[0]) if len(c) else "-")
            rows.append(row + [str(int(mine["seeds"].max()))])
    tidy = pd.concat([cells, wr.assign(metric="wr:" + wr["judge"]).drop(columns="judge")])
    tidy["row"] = tidy.pop("ablation").map(labels)
    notes = [f"RPO under each setting, and the default RPO ({REFERENCE_ROW}). WR: RPO of that row against the "
             f"default {baseline.upper()} run. Cells: mean [95% interval]."]
    if not ablations:
        notes.append("This config has no ablation for this table.")
    return Table(name, tidy, header, rows, notes)


TABLES = {"table2": table2, "table3": table3, **{t: (lambda c, i, t=t: ablation_table(c, i, t))
                                                 for t in ("table4", "table5", "table6", "table7")}}


def write_table(cfg: dict, name: str, paths: list[str], out_prefix) -> str:
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(paths)
    table = TABLES[name](cfg, inputs)
    markdown = table.markdown(cfg)
    out_prefix.with_suffix(".md").write_text(markdown)
    out_prefix.with_suffix(".tex").write_text(table.latex(cfg))
    tidy = table.tidy.copy()
    tidy.insert(0, "table", name)
    tidy[["table", "model", "row", "metric", "value", "ci_low", "ci_high", "seeds"]].to_csv(
        out_prefix.with_suffix(".csv"), index=False)
    out_prefix.with_suffix(".runs.json").write_text(json.dumps(inputs.sidecar(out_prefix, "table"), indent=2))
    return markdown


# ----------------------------------------------------------------------------- figures

def write_figure(cfg: dict, name: str, paths: list[str], out_prefix) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(paths)
    training = inputs.training()
    order = list(cfg["methods"])
    sns.set_theme(style="whitegrid", context="paper")
    if name == "figure1":
        training = training[training["ablation"] == "default"]
        scale, unit = (1, "hours") if training["hours"].max() >= 0.5 else (60, "minutes") \
            if training["hours"].max() >= 1 / 60 else (3600, "seconds")
        training = training.assign(time=training["hours"] * scale)
        grid = sns.catplot(data=training, x="model", y="time", hue="method", hue_order=order, kind="bar",
                           errorbar=("ci", 95), height=3.5, aspect=1.8)
        grid.set_axis_labels("", f"training time ({unit})")
        grid.figure.suptitle(f"Figure 1: training time per model and method (config {cfg['name']})", y=1.03)
    else:
        kl = inputs.kl()
        kl = kl[kl["ablation"] == "default"]
        grid = sns.relplot(data=kl, x="step", y="kl", hue="method", hue_order=order, col="model", kind="line",
                           errorbar=("ci", 95), col_wrap=min(4, max(1, kl["model"].nunique())), height=3,
                           facet_kws={"sharey": False})
        grid.set_axis_labels("training step", "KL(pi_theta || pi_ref) (nats)")
        grid.figure.suptitle(f"Figure 2: KL divergence to the reference during training (config {cfg['name']})", y=1.05)
    for suffix in (".png", ".pdf"):
        grid.figure.savefig(out_prefix.with_suffix(suffix), bbox_inches="tight", dpi=150)
    plt.close(grid.figure)
    out_prefix.with_suffix(".runs.json").write_text(json.dumps(inputs.sidecar(out_prefix, "figure"), indent=2))


# ----------------------------------------------------------------------------- the paper, beside ours

PAPER_CSV = Path(__file__).resolve().parents[2] / "docs" / "paper_reported.csv"


def paper_comparison(cfg: dict, table_csvs: list[str], out_md) -> str:
    paper = pd.read_csv(PAPER_CSV, dtype={"value": float})
    ours = pd.concat([pd.read_csv(p) for p in table_csvs], ignore_index=True)
    names = {m: spec.get("paper_name") for m, spec in cfg["models"].items()}
    ours["paper_model"] = ours["model"].map(names)
    merged = paper.merge(ours, left_on=["table", "model", "row", "metric"],
                         right_on=["table", "paper_model", "row", "metric"], how="left", suffixes=("_paper", ""))
    stand_ins = [m for m, spec in cfg["models"].items() if spec.get("paper_name") and spec["source"] == "tiny"]
    lines = [f"# Paper vs this reproduction (config `{cfg['name']}`)", "",
             "Every cell the paper reports (Tables II-VII), our value beside it, the difference (ours - paper) and our "
             "95% interval. `-`: this config does not produce that cell. Percentages for win rates, otherwise the "
             "metric's own scale.", ""]
    if stand_ins:
        lines += [f"**Not comparable:** {', '.join(stand_ins)} are tiny stand-ins built from scratch, mapped to paper "
                  "models only to exercise this table.", ""]
    mapped = {v: k for k, v in names.items() if v}
    lines += ["| Table | Paper model | Our model | Row | Metric | Paper | Ours | Diff | Our 95% interval |",
              "|---|---|---|---|---|---|---|---|---|"]
    produced = 0
    for _, r in merged.iterrows():
        has = not pd.isna(r["value"])
        produced += has
        ours_text = f"{r['value']:.3f}" if has else "-"
        diff = f"{r['value'] - r['value_paper']:+.3f}" if has else "-"
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if has and not pd.isna(r["ci_low"]) else "-"
        lines.append(f"| {r['table']} | {r['model_paper']} | {mapped.get(r['model_paper'], '-')} | {r['row']} | "
                     f"{r['metric']} | {r['value_paper']:g} | {ours_text} | {diff} | {ci} |")
    lines.insert(4, f"{produced} of {len(merged)} reported cells have a counterpart here.\n")
    text = "\n".join(lines) + "\n"
    Path(out_md).write_text(text)
    sidecar = {"comparison": Path(out_md).name, "paper_values": str(PAPER_CSV.name),
               "inputs": {p: md5(p) for p in [*table_csvs, *[str(Path(p).with_suffix(".runs.json")) for p in table_csvs]]},
               "mlflow_run_ids": sorted({r for p in table_csvs for r in json.loads(
                   Path(p).with_suffix(".runs.json").read_text())["mlflow_run_ids"]})}
    Path(out_md).with_suffix(".runs.json").write_text(json.dumps(sidecar, indent=2))
    return text


# ----------------------------------------------------------------------------- the MLflow report run

def log_report_run(cfg: dict, files: list[str], out_json) -> str:
    """One MLflow 'report' run holding every table, figure and sidecar as artifacts, linked to the source runs."""
    from rpo import tracking

    files = [Path(f) for f in files]
    sources = sorted({r for f in files if f.name.endswith(".runs.json")
                      for r in json.loads(f.read_text())["mlflow_run_ids"]})
    with tracking.run(cfg, "report", Path(out_json).parent, {"table": "all"}) as run:
        for f in files:
            run.log_artifact(f)
        summary = {"report_run_id": run.run_id, "source_run_ids": sources,
                   "artifacts": {str(f): md5(f) for f in files}}
        Path(out_json).write_text(json.dumps(summary, indent=2))
        run.log_artifact(out_json)
    return run.run_id or "recorded offline"
