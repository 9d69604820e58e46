"""The paper's reported cells (rpo.paper.PAPER_CSV) beside this reproduction's, with differences and intervals."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rpo import io
from rpo.io import md5
from rpo.paper import PAPER_CSV


def paper_comparison(cfg: dict, table_csvs: list[str], out_md) -> str:
    paper = pd.read_csv(PAPER_CSV, dtype={"value": float})
    ours = pd.concat([pd.read_csv(p) for p in table_csvs], ignore_index=True)
    names = {m: spec.get("paper_name") for m, spec in cfg["models"].items()}
    ours["paper_model"] = ours["model"].map(names)
    merged = paper.merge(
        ours,
        left_on=["table", "model", "row", "metric"],
        right_on=["table", "paper_model", "row", "metric"],
        how="left",
        suffixes=("_paper", ""),
    )
    stand_ins = [m for m, spec in cfg["models"].items() if spec.get("paper_name") and spec["source"] == "tiny"]
    lines = [
        f"# Paper vs this reproduction (config `{cfg['name']}`)",
        "",
        "Every cell the paper reports (Tables II-VII), our value beside it, the difference (ours - paper) and our "
        "95% interval. `-`: this config does not produce that cell. Percentages for win rates, otherwise the "
        "metric's own scale.",
        "",
    ]
    if stand_ins:
        lines += [
            f"**Not comparable:** {', '.join(stand_ins)} are tiny stand-ins built from scratch, mapped to paper "
            "models only to exercise this table.",
            "",
        ]
    if (paper["table"] == "table6").any():
        lines += [
            "**Table VI's 25% row is degenerate.** UltraFeedback has 4 completions per prompt, so 25% density keeps one "
            "per prompt. Under the paper's estimator (eq. 19, the mean) V_hat(x) = r on every prompt and RPO's target "
            "(r - V_hat)/beta is identically 0: whatever that row shows is optimisation noise, not an effect of "
            "density. Under the released code's reference-weighted sum the target is -log pi_ref(y|x) instead, a pull "
            "towards imitating y. Our own rows say which case they are in ('V_hat = r on ...% of prompts' in Table "
            "VI); docs/fidelity.md has both.",
            "",
        ]
    mapped = {v: k for k, v in names.items() if v}
    lines += [
        "| Table | Paper model | Our model | Row | Metric | Paper | Ours | Diff | Our 95% interval |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    produced = 0
    for _, r in merged.iterrows():
        has = not pd.isna(r["value"])
        produced += has
        ours_text = f"{r['value']:.3f}" if has else "-"
        diff = f"{r['value'] - r['value_paper']:+.3f}" if has else "-"
        ci = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if has and not pd.isna(r["ci_low"]) else "-"
        lines.append(
            f"| {r['table']} | {r['model_paper']} | {mapped.get(r['model_paper'], '-')} | {r['row']} | "
            f"{r['metric']} | {r['value_paper']:g} | {ours_text} | {diff} | {ci} |"
        )
    lines.insert(4, f"{produced} of {len(merged)} reported cells have a counterpart here.\n")
    text = "\n".join(lines) + "\n"
    io.write_text(out_md, text)
    sidecar = {
        "comparison": Path(out_md).name,
        "paper_values": str(PAPER_CSV.name),
        "inputs": {p: md5(p) for p in [*table_csvs, *[str(Path(p).with_suffix(".runs.json")) for p in table_csvs]]},
        "mlflow_run_ids": sorted(
            {r for p in table_csvs for r in json.loads(Path(p).with_suffix(".runs.json").read_text())["mlflow_run_ids"]}
        ),
    }
    io.write_text(Path(out_md).with_suffix(".runs.json"), json.dumps(sidecar, indent=2))
    return text
