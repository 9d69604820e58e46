"""The diagnosis table and Figure 4's data: where each policy loses the optimum's gain (rpo.evaluate.diagnose).

Per policy, KL(pi* || pi_theta) on training prompts and on test prompts (the reference's own distance
KL(pi* || pi_ref) beside it), the fit of its implied reward beta * h to the true reward on the reference's test
samples, and for RPO and DRO the fit of the learned log-ratio to its regression target on the training rows. Per
model, the error of the partition estimate the training signal rests on: V_hat from each training prompt's
completions against V = beta log(1/N sum exp(r/beta)) from N reference samples of the same prompt.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rpo import paper
from rpo.evaluate.diagnose import kl_to_optimum
from rpo.report import optimum, paired
from rpo.report.inputs import Inputs, degenerate_note, zero_share
from rpo.train import objectives

SPLITS = (("train", "training"), ("test", "test"))


def _reference_kl(samples: pd.DataFrame, model: str, beta: float, quantile: bool = False) -> np.ndarray:
    """Per prompt: KL(pi* || pi_ref) at beta, or with `quantile` KL(pi*_q || pi_ref) (QRPO's target)."""
    _, rewards, _ = optimum.sample_matrix(samples, model)
    rewards = optimum.within_prompt_quantiles(rewards) if quantile else rewards
    return kl_to_optimum(rewards, np.zeros_like(rewards), beta)


def distances(cfg: dict, inputs: Inputs) -> pd.DataFrame:
    """model, policy, method, ablation, seed, prompts (training/test), value = mean KL(pi* || pi_theta), for the
    reference and the runs at the config's beta (a run at another beta is measured against another pi*)."""
    rows = []
    beta = cfg["objective"]["beta"]
    for key, samples in (("test", inputs.reference_samples()), ("train", inputs.train_samples())):
        for model in [m for m in cfg["models"] if len(samples) and m in set(samples["model"])]:
            value = float(_reference_kl(samples, model, beta).mean())
            rows.append(
                dict(
                    model=model,
                    policy="Reference",
                    method=paper.REFERENCE,
                    ablation="default",
                    seed=0,
                    prompts=dict(SPLITS)[key],
                    value=value,
                )
            )
    for d in [d for d in inputs.diagnoses() if d["beta"] == beta]:  # against pi* at the reference line's beta
        for key, prompts in SPLITS:
            if key in d:
                policy = optimum.label(cfg, d["method"], d["ablation"])
                rows.append(
                    dict(
                        model=d["model"],
                        policy=policy,
                        method=d["method"],
                        ablation=d["ablation"],
                        seed=d["seed"],
                        prompts=prompts,
                        value=d[key]["kl_to_optimum"],
                    )
                )
    return pd.DataFrame(rows, columns=["model", "policy", "method", "ablation", "seed", "prompts", "value"])


def partition_error(cfg: dict, train: pd.DataFrame, samples: pd.DataFrame, model: str) -> dict:
    """V_hat (the paper's mean over a prompt's training completions) against V from the N reference samples of the
    same training prompts, at the config's beta, on the standardised reward: bias, RMSE, and completions per prompt."""
    beta = cfg["objective"]["beta"]
    prompts, rewards, _ = optimum.sample_matrix(samples, model)
    v_reference = optimum.snis_weights(rewards, beta)[1] * beta
    mine = train[train["prompt_id"].isin(prompts)].reset_index(drop=True)
    codes = objectives.prompt_codes(mine)
    v_hat = objectives.partition_values(mine["reward"].to_numpy(), codes, beta, "mean").numpy()
    order = list(mine["prompt_id"].astype("category").cat.categories)
    error = v_hat - v_reference[[prompts.index(p) for p in order]]
    return dict(
        prompts=len(order),
        completions=float(mine.groupby("prompt_id").size().mean()),
        bias=float(error.mean()),
        rmse=float(np.sqrt((error**2).mean())),
    )


def _fit_text(slope: float, r2: float) -> str:
    """slope / R^2; a target that never varies (one completion per prompt) has no slope."""
    return f"{slope:.2f} / {r2:.2f}" if math.isfinite(slope) else "- (constant target)"


def table(cfg: dict, inputs: Inputs, fmt) -> tuple[list, list, list, pd.DataFrame]:
    """The diagnosis table's header, rows, notes and tidy frame (`fmt`: the tables' number format)."""
    boot = cfg["score"]["bootstrap"]
    ci = lambda m: paired.two_way_ci(m, boot["samples"], boot["confidence"], boot["seed"])  # noqa: E731
    header = [
        "Model",
        "Policy",
        "KL(pi* || pi) training prompts",
        "KL(pi* || pi) test prompts",
        "Implied reward slope / R^2 (test)",
        "Regression slope / R^2 (training rows)",
        "Seeds",
    ]
    rows, tidy, notes_v, notes_own = [], [], [], []

    def record(model, row, metric, value, ci=(math.nan, math.nan), seeds=1):
        tidy.append(dict(model=model, row=row, metric=metric, value=value, ci_low=ci[0], ci_high=ci[1], seeds=seeds))

    def mean_fit(model, row, name, split, fits, seeds) -> str:
        slope, r2 = np.mean([f["slope"] for f in fits]), np.mean([f["r2"] for f in fits])
        record(model, row, f"{name}_slope:{split}", slope, seeds=seeds)
        record(model, row, f"{name}_r2:{split}", r2, seeds=seeds)
        return _fit_text(slope, r2)

    beta = cfg["objective"]["beta"]
    test_samples, train_samples = inputs.reference_samples(), inputs.train_samples()
    diagnoses = pd.DataFrame(inputs.diagnoses())
    betas = sorted({beta, *(diagnoses["beta"] if len(diagnoses) else [])})
    for model in [m for m in cfg["models"] if len(test_samples) and m in set(test_samples["model"])]:
        for b in betas:  # the reference's own distance to pi*(b): where every run at that beta starts from
            label = "Reference" if b == beta else f"Reference (against pi* at beta {b:g})"
            row = [model, label]
            for key, samples in (("train", train_samples), ("test", test_samples)):
                if not len(samples) or model not in set(samples["model"]):
                    row.append("-")
                    continue
                values = _reference_kl(samples, model, b)
                interval = ci(values[None, :])
                record(model, label, f"kl_to_optimum:{key}", float(values.mean()), interval)
                row.append(fmt(float(values.mean()), 3, *interval))
            rows.append(row + ["0 / -", "-", "1"])
        mine = diagnoses[diagnoses["model"] == model] if len(diagnoses) else diagnoses
        for (method, ablation), runs in mine.groupby(["method", "ablation"], sort=False) if len(mine) else []:
            label, seeds = optimum.label(cfg, method, ablation), len(runs)
            row = [model, label + degenerate_note(zero_share(inputs, model, method, ablation))]
            for key, _ in SPLITS:
                if key not in runs or runs[key].isna().any():
                    row.append("-")
                    continue
                matrix = np.array([r["kl_to_optimum_per_prompt"] for r in runs[key]])
                lo, hi = ci(matrix)
                record(model, label, f"kl_to_optimum:{key}", float(matrix.mean()), (lo, hi), seeds)
                row.append(fmt(float(matrix.mean()), 3, lo, hi))
            implied = [r["implied_reward"] for r in runs["test"]]
            row.append(mean_fit(model, label, "implied_reward", "test", implied, seeds))
            regression = runs["regression"].dropna().tolist() if "regression" in runs else []
            row.append(mean_fit(model, label, "regression", "train", regression, seeds) if regression else "-")
            rows.append(row + [str(seeds)])
            own = [r.get("kl_to_own_target") for r in runs["test"]]
            if all(v is not None for v in own):  # QRPO: its distance to its own target pi*_q, and the reference's
                b = float(runs["beta"].iloc[0])
                start = float(_reference_kl(test_samples, model, b, quantile=True).mean())
                record(model, label, "kl_to_own_target:test", float(np.mean(own)), seeds=seeds)
                notes_own.append(f"| {model} | {label} | {b:g} | {start:.3f} | {np.mean(own):.3f} |")
        tables = inputs.of("train.parquet")  # the model's own (sampled from its reference), else the shared one
        training = [t for t in tables if t.parent.parent.name == model]
        training = training or [t for t in tables if t.parent.parent.name not in cfg["models"]]
        if len(train_samples) and model in set(train_samples["model"]) and training:
            err = partition_error(cfg, pd.read_parquet(training[0]), train_samples, model)
            notes_v.append(
                f"| {model} | {err['prompts']} | {err['completions']:.1f} | {err['bias']:+.3f} | {err['rmse']:.3f} |"
            )
            for k in ("bias", "rmse"):
                record(model, "V_hat error", k, err[k])
    notes = [
        f"KL(pi* || pi): the self-normalised estimate from the reference's samples (pi* at each policy's beta; the "
        f"reference's rows at each of those betas), on {cfg['optimum']['train_prompts']} training prompts and on the test "
        "prompts; mean over seeds [95% interval: two-way bootstrap over seeds and prompts]. A policy that moved "
        "towards pi* is below the reference's row. Training small and test large: it does not generalise; both at "
        "the reference's level or above: the optimisation or the training signal falls short. Implied reward: "
        "beta * (log pi - log pi_ref) against the true standardised reward within each test prompt (pi*: slope 1, "
        "R^2 1). Regression (RPO, DRO, QRPO): the learned log-ratio against its target, (r - V_hat) / beta (QRPO: "
        "q / beta - log Z), on the training rows (a perfect fit: slope 1, R^2 1). Mean over seeds.",
    ]
    if notes_own:
        notes += [
            "",
            "QRPO against its own target pi*_q = pi_ref exp(q/beta) / Z (q: each sample's quantile among its prompt's "
            "reference samples), KL(pi*_q || pi) on the test prompts, mean over seeds:",
            "",
            "| Model | Policy | beta | Reference: KL(pi*_q \\|\\| pi_ref) | Policy: KL(pi*_q \\|\\| pi) |",
            "|---|---|---|---|---|",
            *notes_own,
        ]
    if notes_v:
        notes += [
            "",
            f"The partition estimate on the training prompts (beta {beta:g}, standardised reward): V_hat from each "
            "prompt's training completions (the paper's mean) minus V from the N reference samples of the same "
            "prompt:",
            "",
            "| Model | Prompts | Completions per prompt | Bias of V_hat | RMSE of V_hat |",
            "|---|---|---|---|---|",
            *notes_v,
            "",
            "Policies:",
        ]
    columns = ["model", "row", "metric", "value", "ci_low", "ci_high", "seeds"]
    return header, rows, notes, pd.DataFrame(tidy, columns=columns)
