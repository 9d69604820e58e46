"""The KL-regularised optimum pi*(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x) that RPO, DRO and KTO aim at, and how
close each trained policy gets to it, where the reward can be computed (the synthetic world).

From N completions per held-out prompt drawn from the reference (rpo reference-samples), self-normalised importance
weights w_j proportional to exp(r_j / beta) give, per prompt:

  E_pi*[r]          = sum_j w_j r_j
  KL(pi* || pi_ref) = E_pi*[r] / beta - log( 1/N sum_j exp(r_j / beta) )

beta acts on the standardised training reward (the scale the objectives see), so the weights use it; rewards are
reported on the raw scale. Both estimates are consistent (exact as N grows) but biased for finite N: the weights
are normalised by their own sum, and the N samples miss the reference's rarer, better completions, so E_pi*[r] and
the KL are underestimated, the more so the smaller beta (the sharper the weights). The table shows the estimate at
N = 1, 2, 4, ... so its convergence can be read off.

A method's share of the optimal gain is (R_method - R_ref) / (R_* - R_ref) with R the true reward of plain samples
(temperature 1): R_method from its sampled evaluation, R_ref and R_* from the reference's N samples.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from rpo import config as config_lib
from rpo import paper
from rpo.evaluate import metrics
from rpo.report.inputs import Inputs, across_seeds


def snis(rewards: np.ndarray, raw: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt (rows of [P, N] arrays of standardised and raw rewards of N reference samples): the optimum's
    expected raw reward, and KL(pi* || pi_ref) (>= 0: the KL of the reweighted sample from the sample)."""
    logw = rewards / beta
    log_z = logsumexp(logw, axis=1, keepdims=True)
    weights = np.exp(logw - log_z)
    kl = (weights * rewards).sum(1) / beta - (log_z[:, 0] - math.log(rewards.shape[1]))
    return (weights * raw).sum(1), np.maximum(kl, 0.0)


def sample_matrix(samples: pd.DataFrame, model: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One model's reference samples as prompt ids and [P, N] standardised and raw reward arrays."""
    mine = samples[samples["model"] == model].sort_values(["prompt_id", "sample"])
    prompts = list(dict.fromkeys(mine["prompt_id"]))
    shape = (len(prompts), len(mine) // max(len(prompts), 1))
    return prompts, mine["reward"].to_numpy(float).reshape(shape), mine["reward_raw"].to_numpy(float).reshape(shape)


def convergence(rewards: np.ndarray, raw: np.ndarray, beta: float) -> list[tuple[int, float, float]]:
    """(n, E_pi*[r], KL) from the first n samples of each prompt, n = 1, 2, 4, ..., N."""
    sizes = sorted({2**i for i in range(int(math.log2(rewards.shape[1])) + 1)} | {rewards.shape[1]})
    return [(n, *(float(v.mean()) for v in snis(rewards[:, :n], raw[:, :n], beta))) for n in sizes]


def _ci(values, cfg: dict) -> tuple[float, float]:
    boot = cfg["score"]["bootstrap"]
    return metrics.mean_ci(list(values), boot["samples"], boot["confidence"], boot["seed"])


def _paired_ci(numerator, denominator, cfg: dict) -> tuple[float, float]:
    """Bootstrap over prompts of mean(numerator) / mean(denominator) (prompts resampled jointly)."""
    boot = cfg["score"]["bootstrap"]
    num, den = np.asarray(numerator, float), np.asarray(denominator, float)
    return metrics.bootstrap_ci(
        lambda idx: num[idx].mean() / den[idx].mean(), len(num), boot["samples"], boot["confidence"], boot["seed"]
    )


def frontier(cfg: dict, inputs: Inputs) -> dict:
    """Everything the optimum table and Figure 3 show, per model: the reference, the optimum over betas, and each
    trained policy's sampled reward, final KL, gain over the reference and share of the optimal gain."""
    samples = inputs.reference_samples()
    per_prompt = inputs.per_prompt("sampled_true_reward")
    kl = inputs.kl()
    final_kl = kl.sort_values("step").groupby(["model", "method", "ablation", "seed"]).tail(1)
    betas = config_lib.trained_betas(cfg)
    out = {}
    for model in [m for m in cfg["models"] if m in set(samples["model"])]:
        prompts, rewards, raw = sample_matrix(samples, model)
        ref_per_prompt = raw.mean(1)
        curve = []
        for beta in sorted(set(cfg["optimum"]["betas"]) | set(betas)):
            best, kl_star = snis(rewards, raw, beta)
            curve.append(
                dict(
                    beta=beta,
                    reward=best.mean(),
                    reward_ci=_ci(best, cfg),
                    kl=kl_star.mean(),
                    kl_ci=_ci(kl_star, cfg),
                    per_prompt=best,
                    convergence=convergence(rewards, raw, beta),
                )
            )
        optimum = {c["beta"]: c for c in curve}
        policies = []
        for (method, ablation), runs in per_prompt[per_prompt["model"] == model].groupby(
            ["method", "ablation"], sort=False
        ):
            beta = config_lib.run_beta(cfg, method, ablation)
            star = optimum[beta]
            gap = star["reward"] - ref_per_prompt.mean()
            seeds = []
            for seed, run in runs.groupby("seed"):
                values = run.set_index("prompt_id")["value"].reindex(prompts).to_numpy(float)
                gain = values - ref_per_prompt
                share_den = star["per_prompt"] - ref_per_prompt
                seeds.append(
                    dict(
                        seed=seed,
                        reward=values.mean(),
                        reward_ci=_ci(values, cfg),
                        gain=gain.mean(),
                        gain_ci=_ci(gain, cfg),
                        share=gain.mean() / gap if gap else math.nan,
                        share_ci=_paired_ci(gain, share_den, cfg),
                    )
                )
            cell_kl = final_kl[
                (final_kl["model"] == model) & (final_kl["method"] == method) & (final_kl["ablation"] == ablation)
            ]
            policies.append(
                dict(
                    method=method,
                    ablation=ablation,
                    beta=beta,
                    seeds=seeds,
                    kl=[0.0] if method == paper.REFERENCE else [float(v) for v in cell_kl["kl"]],
                )
            )
        out[model] = dict(
            prompts=len(prompts),
            n=rewards.shape[1],
            reference=ref_per_prompt.mean(),
            reference_ci=_ci(ref_per_prompt, cfg),
            curve=curve,
            optimum=optimum,
            policies=policies,
        )
    return out


def seed_cell(seeds: list[dict], key: str) -> dict:
    """A quantity across seeds as the other tables show it (mean; t-interval across 2+ seeds, else the bootstrap)."""
    frame = pd.DataFrame([dict(k=0, value=s[key], ci_low=s[f"{key}_ci"][0], ci_high=s[f"{key}_ci"][1]) for s in seeds])
    return across_seeds(frame, ["k"]).iloc[0].to_dict()


def label(cfg: dict, method: str, ablation: str) -> str:
    name = "Reference" if method == paper.REFERENCE else method.upper()
    return (
        name
        if ablation == "default"
        else f"{name} ({paper.ablation_label(cfg, ablation, config_lib.for_ablation(cfg, ablation))})"
    )
