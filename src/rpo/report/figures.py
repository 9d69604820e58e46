"""Figure 1 (training time per model and method), Figure 2 (KL to the reference during training), Figure 3 (the
reward-KL frontier against the KL-regularised optimum) and Figure 4 (distance to the optimum on training and test
prompts), PNG and PDF, each with a sidecar of the runs it was made from."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pandas as pd
from scipy import stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend
import seaborn as sns  # noqa: E402

from rpo import config as config_lib  # noqa: E402
from rpo import io  # noqa: E402
from rpo.report import diagnosis, optimum  # noqa: E402
from rpo.report.inputs import Inputs  # noqa: E402


def frontier_figure(cfg: dict, inputs: Inputs):
    """Per model: the optimum's (KL, reward) curve over beta (solid where trusted, dotted past log N / 2), the
    reference at KL 0, QRPO's target pi*_q, best-of-n at its analytic KL bound (a bar to the left: its KL is at most
    that), and every trained policy at its final KL and sampled true reward (95% intervals: two-way bootstrap for the
    reward, across seeds for the KL); hollow markers: a KL past the trusted curve."""
    data = optimum.frontier(cfg, inputs)
    fig, axes = plt.subplots(1, len(data), figsize=(5.6 * len(data), 5.6), squeeze=False)
    palette = dict(zip(cfg["methods"], sns.color_palette(n_colors=len(cfg["methods"]))))
    for ax, (model, f) in zip(axes[0], data.items()):
        curve = sorted(f["curve"], key=lambda c: c["kl"])
        good = [c for c in curve if c["trusted"]]
        past = [c for c in curve if not c["trusted"]]
        ax.plot([c["kl"] for c in good], [c["reward"] for c in good], "k-", lw=1, label="optimum pi* (trusted)")
        if past:
            ax.plot(
                [c["kl"] for c in good[-1:] + past],
                [c["reward"] for c in good[-1:] + past],
                ":",
                lw=1,
                color="0.6",
                label=f"optimum past log N / 2 (N = {f['n']}): not trusted",
            )
        for c in curve:
            ax.annotate(
                f"{c['beta']:g}",
                (c["kl"], c["reward"]),
                fontsize=6,
                color="0.4",
                xytext=(3, -9),
                textcoords="offset points",
            )
        ax.axvline(f["max_trusted_kl"], color="0.8", lw=0.8, zorder=0)
        ax.errorbar(
            [0],
            [f["reference"]],
            yerr=[[f["reference"] - f["reference_ci"][0]], [f["reference_ci"][1] - f["reference"]]],
            fmt="ks",
            label="reference",
        )
        for i, (beta, star) in enumerate(f["quantile_optimum"].items()):
            ax.errorbar(
                [star["kl"]],
                [star["reward"]],
                yerr=[[star["reward"] - star["reward_ci"][0]], [star["reward_ci"][1] - star["reward"]]],
                fmt="D",
                color="0.3",
                markerfacecolor="white",
                label=None if i else "pi*_q, QRPO's target (q: beta)",
            )
            ax.annotate(
                f"q: {beta:g}",
                (star["kl"], star["reward"]),
                fontsize=6,
                color="0.3",
                xytext=(4, 3),
                textcoords="offset points",
            )
        for size, b in f["best_of"].items():
            ax.errorbar(
                [b["kl_bound"]],
                [b["reward"]],
                xerr=[[b["kl_bound"]], [0.0]],
                yerr=[[b["reward"] - b["reward_ci"][0]], [b["reward_ci"][1] - b["reward"]]],
                fmt="*",
                ms=9,
                color="0.45",
                elinewidth=0.6,
                label=f"best-of-{size} (at its KL bound)",
            )
        for p in f["policies"]:  # the methods at their default beta, and the runs that change beta
            if p["method"] not in palette or not len(p["kl_seeds"]):
                continue
            if p["ablation"] != "default" and p["beta"] == config_lib.run_beta(cfg, p["method"], "default"):
                continue
            kl = pd.Series(p["kl_seeds"])
            kl_half = 0.0 if len(kl) < 2 else float(stats.t.ppf(0.975, len(kl) - 1) * kl.std() / len(kl) ** 0.5)
            color = palette[p["method"]]
            ax.errorbar(
                [kl.mean()],
                [p["reward"]],
                xerr=[[min(kl_half, kl.mean())], [kl_half]],  # a KL interval stops at 0
                yerr=[[p["reward"] - p["reward_ci"][0]], [p["reward_ci"][1] - p["reward"]]],
                fmt="o" if p["ablation"] == "default" else "^",
                color=color,
                markerfacecolor="white" if p["beyond_trusted"] else color,
                capsize=2,
                label=optimum.label(cfg, p["method"], p["ablation"])
                + (" (past trusted)" if p["beyond_trusted"] else ""),
            )
        ax.set_title(model)
        ax.set_xlabel("KL(pi_theta || pi_ref) at the end of training (nats)")
        ax.set_ylabel("true reward, plain samples (test prompts)")
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3)  # below: never over a point
    fig.suptitle(f"Figure 3: reward against KL to the reference, and the KL-regularised optimum (config {cfg['name']})")
    fig.tight_layout()
    return fig


def diagnosis_figure(cfg: dict, inputs: Inputs):
    """Per model: each policy's KL(pi* || pi_theta) on training and test prompts, the reference's as a line."""
    frame = diagnosis.distances(cfg, inputs)
    models = list(dict.fromkeys(frame["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = frame[frame["model"] == model]
        reference = mine[mine["policy"] == "Reference"].set_index("prompts")["value"]
        policies = mine[mine["policy"] != "Reference"]
        sns.barplot(data=policies, x="policy", y="value", hue="prompts", errorbar=("ci", 95), ax=ax)
        for prompts, style in (("training", "--"), ("test", ":")):
            if prompts in reference:
                ax.axhline(reference[prompts], color="k", ls=style, lw=1, label=f"reference ({prompts})")
        ax.set_title(model)
        ax.set_xlabel("")
        ax.set_ylabel("KL(pi* || pi_theta) (nats)")
        ax.tick_params(axis="x", labelrotation=60, labelsize=6)
        ax.legend(fontsize=6)
    fig.suptitle(f"Figure 4: distance to the optimum on training and test prompts (config {cfg['name']})")
    fig.tight_layout()
    return fig


def write_figure(cfg: dict, name: str, paths: list[str], out_prefix) -> None:
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(paths)
    training = inputs.training()
    order = list(cfg["methods"])
    sns.set_theme(style="whitegrid", context="paper")
    if name in ("figure3", "figure4"):
        figure = (frontier_figure if name == "figure3" else diagnosis_figure)(cfg, inputs)
    elif name == "figure1":
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
        estimator = cfg["train"]["kl_estimator"].replace("_", "-")
        grid.set_axis_labels("training step", f"KL(pi_theta || pi_ref), {estimator} estimate (nats)")
        grid.figure.suptitle(f"Figure 2: KL divergence to the reference during training (config {cfg['name']})", y=1.05)
    figure = figure if name in ("figure3", "figure4") else grid.figure
    for suffix in (".png", ".pdf"):
        with io.atomic(out_prefix.with_suffix(suffix)) as tmp:
            figure.savefig(tmp, format=suffix[1:], bbox_inches="tight", dpi=150)
    plt.close(figure)
    io.write_text(out_prefix.with_suffix(".runs.json"), json.dumps(inputs.sidecar(out_prefix, "figure"), indent=2))
