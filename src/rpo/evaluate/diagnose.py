"""Where a trained policy loses the optimum's gain, from the reference's samples only (forward passes, no sampling
from the policy).

On N reference samples per prompt, with self-normalised weights w_j ~ exp(r_j / beta) and Z_hat = 1/N sum_j
exp(r_j / beta), log pi*(y|x) - log pi_ref(y|x) = r/beta - log Z(x), so with h = log pi_theta - log pi_ref:

  KL(pi* || pi_theta) = sum_j w_j (r_j / beta - log Z_hat - h_j)      (pi_theta = pi_ref: KL(pi* || pi_ref))

on the test prompts and on training prompts (optimum.train_prompts). Small on training prompts and large on test
prompts: the policy fits what it saw and does not generalise; large on both: the optimisation (or the training
signal: the partition estimate from a few completions) falls short. Beside it, the policy's implied reward beta * h
against the true reward r on the same samples (within each prompt, centred): slope 1 and R^2 1 for pi*. For RPO
and DRO also the regression itself on their training rows: the learned h against its target (r - V_hat) / beta;
for QRPO against its target (q - beta log Z) / beta, and its KL to its own target pi*_q (exp(q/beta) in place of
exp(r/beta), q the sample's quantile among its prompt's N reference samples).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rpo import config as config_lib
from rpo import io, tracking
from rpo.models import build, logprobs
from rpo.reference.logprobs import score_rows, score_sampled
from rpo.report.optimum import snis_weights, within_prompt_quantiles
from rpo.train import objectives
from rpo.train.inputs import training_table

REGRESSION_METHODS = ("rpo", "dro", "qrpo")


def kl_to_optimum(rewards: np.ndarray, h: np.ndarray, beta: float) -> np.ndarray:
    """Per prompt ([P, N] standardised rewards and log-ratios of N reference samples): the self-normalised estimate
    of KL(pi* || pi_theta)."""
    weights, log_z = snis_weights(rewards, beta)
    return (weights * (rewards / beta - log_z[:, None] - h)).sum(1)


def fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Least-squares slope of y on x (both already centred or with an intercept removed) and R^2."""
    x, y = x - x.mean(), y - y.mean()
    sxx, syy = float((x * x).sum()), float((y * y).sum())
    slope = float((x * y).sum()) / sxx if sxx > 0 else math.nan
    r2 = float((x * y).sum()) ** 2 / (sxx * syy) if sxx > 0 and syy > 0 else 0.0
    return {"slope": slope, "r2": r2}


def implied_reward_fit(rewards: np.ndarray, h: np.ndarray, beta: float) -> dict:
    """beta * h against r within each prompt ([P, N]): how far the policy's implied reward is the true one."""
    centred = lambda a: (a - a.mean(1, keepdims=True)).ravel()  # noqa: E731
    return fit(centred(rewards), centred(beta * h))


def regression_target(cfg: dict, table: pd.DataFrame, method: str) -> np.ndarray:
    """The log-ratio each training row is regressed on: (r - V_hat)/beta (RPO), (q - beta log Z)/beta (QRPO)."""
    beta = cfg["objective"]["beta"]
    if method == "qrpo":
        log_z = objectives.quantile_log_partition(beta, cfg["objective"]["qrpo"]["log_z"] == "exact")
        return table["quantile"].to_numpy(float) / beta - log_z
    return (table["reward"].to_numpy(float) - table["v_hat"].to_numpy(float)) / beta


def _matrices(frame: pd.DataFrame, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    shape = (frame["prompt_id"].nunique(), -1)
    return frame["reward"].to_numpy(float).reshape(shape), h.reshape(shape)


@torch.no_grad()
def diagnose(
    cfg: dict,
    cell: dict,
    model_dir,
    samples: dict,
    train_path,
    ref_path,
    base_train_path,
    out_path,
    ref_rewards_path=None,
) -> dict:
    """`samples`: {'test': path, 'train': path} of the reference's scored samples (with their reference log-probs)."""
    run_cfg = config_lib.for_run(cfg, cell["model"], cell["method"], cell["ablation"])
    spec, tcfg, beta = run_cfg["models"][cell["model"]], run_cfg["train"], run_cfg["objective"]["beta"]
    model, tokenizer = build.load(model_dir, spec["arch"])
    model.to(build.device()).eval()
    name = f"{cell['model']}/{cell['method']}/{cell['ablation']}/seed{cell['seed']}"
    out = {**cell, "beta": beta}
    for split, path in samples.items():
        if not Path(path).stat().st_size:  # optimum.train_prompts: 0
            continue
        frame = pd.read_json(path, lines=True).sort_values(["prompt_id", "sample"], kind="stable")
        logp = score_sampled(
            model,
            tokenizer,
            spec["arch"],
            frame[["prompt_ids", "response_ids"]].to_dict("records"),
            tcfg["batch_size"] * 4,
            f"policy log-probs of the reference's {split} samples ({name})",
        )
        rewards, h = _matrices(frame, logp - frame["ref_logp"].to_numpy(float))
        kl = kl_to_optimum(rewards, h, beta)
        out[split] = {
            "prompts": len(kl),
            "samples_per_prompt": rewards.shape[1],
            "kl_to_optimum": float(kl.mean()),
            "kl_to_optimum_per_prompt": kl.tolist(),
            "implied_reward": implied_reward_fit(rewards, h, beta),
        }
        if cell["method"] == "qrpo":
            out[split]["kl_to_own_target"] = float(kl_to_optimum(within_prompt_quantiles(rewards), h, beta).mean())
    if cell["method"] in REGRESSION_METHODS:
        method = "qrpo" if cell["method"] == "qrpo" else "rpo"  # DRO's value model is not kept: RPO's V_hat instead
        table = training_table(run_cfg, objectives.get(method), train_path, ref_path, base_train_path, ref_rewards_path)
        sums, counts = score_rows(
            model,
            tokenizer,
            spec,
            table["prompt"].tolist(),
            table["response"].tolist(),
            tcfg,
            f"policy log-probs of the training rows ({name})",
        )
        reduction = run_cfg["objective"]["logprob_reduction"]
        policy = logprobs.reduce(torch.tensor(sums), torch.tensor(counts), reduction).numpy()
        target = regression_target(run_cfg, table, method)
        out["regression"] = {"rows": len(table), **fit(target, policy - table["ref_logp"].to_numpy(float))}
    with tracking.run(cfg, "diagnose", Path(out_path).parent, cell) as run:
        flat = {f"{split}_kl_to_optimum": out[split]["kl_to_optimum"] for split in samples if split in out}
        flat |= {f"regression_{k}": v for k, v in out.get("regression", {}).items() if k != "rows"}
        run.log_metrics({k: v for k, v in flat.items() if math.isfinite(v)})
        out["mlflow_run_id"] = run.run_id
        io.write_text(out_path, json.dumps(out, indent=2))
        run.log_artifact(out_path)
    return out
