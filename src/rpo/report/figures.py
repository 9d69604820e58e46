"""Figure 1 (training time per model and method) and Figure 2 (KL to the reference during training), PNG and PDF,
each with a sidecar of the runs it was made from."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
import seaborn as sns  # noqa: E402

from rpo.report.inputs import Inputs  # noqa: E402


def write_figure(cfg: dict, name: str, paths: list[str], out_prefix) -> None:
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(paths)
    training = inputs.training()
    order = list(cfg["methods"])
    sns.set_theme(style="whitegrid", context="paper")
    if name == "figure1":
        training = training[training["ablation"] == "default"]
        scale, unit = (
            (1, "hours")
            if training["hours"].max() >= 0.5
            else (60, "minutes")
            if training["hours"].max() >= 1 / 60
            else (3600, "seconds")
        )
        training = training.assign(time=training["hours"] * scale)
        grid = sns.catplot(
            data=training,
            x="model",
            y="time",
            hue="method",
            hue_order=order,
            kind="bar",
            errorbar=("ci", 95),
            height=3.5,
            aspect=1.8,
        )
        grid.set_axis_labels("", f"training time ({unit})")
        grid.figure.suptitle(f"Figure 1: training time per model and method (config {cfg['name']})", y=1.03)
    else:
        kl = inputs.kl()
        kl = kl[kl["ablation"] == "default"]
        grid = sns.relplot(
            data=kl,
            x="step",
            y="kl",
            hue="method",
            hue_order=order,
            col="model",
            kind="line",
            errorbar=("ci", 95),
            col_wrap=min(4, max(1, kl["model"].nunique())),
            height=3,
            facet_kws={"sharey": False},
        )
        grid.set_axis_labels("training step", "KL(pi_theta || pi_ref) (nats)")
        grid.figure.suptitle(f"Figure 2: KL divergence to the reference during training (config {cfg['name']})", y=1.05)
    for suffix in (".png", ".pdf"):
        grid.figure.savefig(out_prefix.with_suffix(suffix), bbox_inches="tight", dpi=150)
    plt.close(grid.figure)
    out_prefix.with_suffix(".runs.json").write_text(json.dumps(inputs.sidecar(out_prefix, "figure"), indent=2))
