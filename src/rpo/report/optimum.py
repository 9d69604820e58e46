"""The KL-regularised optimum pi*(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x) that RPO, DRO and KTO aim at, and how
close each trained policy gets to it, where the reward can be computed (the synthetic world).

From N completions per test prompt drawn from the reference (rpo reference-samples), self-normalised importance
weights w_j proportional to exp(r_j / beta) give, per prompt:

  E_pi*[r]          = sum_j w_j r_j
  KL(pi* || pi_ref) = E_pi*[r] / beta - log( 1/N sum_j exp(r_j / beta) ) = log N - H(w)  <= log N

beta acts on the standardised training reward (the scale the objectives see), so the weights use it; rewards are
reported on the raw scale. Both estimates are consistent (exact as N grows) but biased for finite N: the weights
are normalised by their own sum, and the N samples miss the reference's rarer, better completions, so E_pi*[r] and
the KL are underestimated, the more so the smaller beta (the sharper the weights). N samples can never show a KL
above log N, so the curve is trusted only where its KL is at most half of that (`trusted`); each beta's effective
sample size and the estimate at N = 1, 2, 4, ... are tabulated.

Against that curve, every policy (SFT and KTO too) gets its KL-matched regret: the optimum's reward at the policy's
own final KL (interpolated along the trusted curve) minus the policy's reward. RPO and DRO, whose stated target is
pi*(beta), also get their share of its gain (R_method - R_ref) / (R_*(beta) - R_ref). R is the true reward of plain
samples (temperature 1): R_method from its sampled evaluation, R_ref and R_* from the reference's N samples.
Intervals: the two-way bootstrap over seeds and prompts (rpo.report.paired).

QRPO (beyond the paper) aims at its own target pi*_q(y|x) = pi_ref(y|x) exp(q(x,y)/beta) / Z, q the reward's quantile
under the reference; estimated the same way with q_j = the share of the prompt's N samples with a reward at or below
r_j in place of r_j. Its share is of pi*_q's gain; its regret, like every policy's, against the true-reward curve.

Best-of-n (evaluation only): each prompt's N samples in N // n groups of n, the best of each by the true reward; its
reward is the mean over groups, its KL at most log n - (n - 1)/n (Beirami et al. 2024: the analytic bound).
Landmark comparisons, paired on the same prompts (and resamples): SFT (trained on each prompt's best of its
completions) against best-of-n, and QRPO's KL-matched regret against RPO's.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from rpo import config as config_lib
from rpo import paper
from rpo.evaluate import metrics
from rpo.report import paired
from rpo.report.inputs import Inputs, zero_share

# The methods whose stated target is pi*(beta) itself (regress beta * log-ratio on r - V): their share of its gain.
SHARE_METHODS = ("rpo", "dro")
# QRPO's target is pi*_q(beta), the optimum of the quantile reward: its share is of that one's gain.
QUANTILE_METHODS = ("qrpo",)


def snis(rewards: np.ndarray, raw: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt (rows of [P, N] arrays of standardised and raw rewards of N reference samples): the optimum's
    expected raw reward, and KL(pi* || pi_ref) = log N - H(w) (>= 0, and <= log N: the ceiling of N samples)."""
    weights, log_z = snis_weights(rewards, beta)
    kl = (weights * rewards).sum(1) / beta - log_z
    return (weights * raw).sum(1), np.clip(kl, 0.0, math.log(rewards.shape[1]))


def snis_weights(rewards: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Self-normalised weights w_j ~ exp(r_j / beta) per prompt [P, N], and log Z_hat = log(1/N sum_j exp(r_j/beta))."""
    logw = rewards / beta
    log_sum = logsumexp(logw, axis=1, keepdims=True)
    return np.exp(logw - log_sum), log_sum[:, 0] - math.log(rewards.shape[1])


def effective_sample_size(rewards: np.ndarray, beta: float) -> np.ndarray:
    """Kish's effective sample size 1 / sum_j w_j^2 of each prompt's weights."""
    weights, _ = snis_weights(rewards, beta)
    return 1.0 / (weights**2).sum(1)


def trusted(kl: float, n: int) -> bool:
    """The optimum's estimate at a beta is trusted when its KL is at most half the log N ceiling: KL = log N - H(w),
    so this says the weights' perplexity exp(H(w)) is at least sqrt(N) (8 of 64 samples still carry the estimate).
    Beyond it the estimate flattens at log N because N samples cannot say more, not because of pi*."""
    return kl <= 0.5 * math.log(n)


def within_prompt_quantiles(rewards: np.ndarray) -> np.ndarray:
    """[P, N]: each sample's share of its prompt's N samples with a reward at or below its own (QRPO's q)."""
    return (rewards[:, None, :] <= rewards[:, :, None]).mean(2)


def best_of_n(raw: np.ndarray, n: int) -> np.ndarray | None:
    """Per prompt: the mean true reward of best-of-n over the N // n disjoint groups of its samples (None: N < n)."""
    groups = raw.shape[1] // n
    if groups == 0:
        return None
    return raw[:, : groups * n].reshape(raw.shape[0], groups, n).max(2).mean(1)


def best_of_n_kl_bound(n: int) -> float:
    """KL(best-of-n || pi_ref) <= log n - (n - 1) / n."""
    return math.log(n) - (n - 1) / n


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


def optimum_at_kl(curve_kl: np.ndarray, curve_reward: np.ndarray, reference: float, kl: float) -> float:
    """The optimum's reward at a given KL, linear in KL between the trusted betas' points and (0, the reference's
    reward) at beta = infinity; NaN past the last trusted point."""
    order = np.argsort(curve_kl)
    xs, ys = np.concatenate([[0.0], curve_kl[order]]), np.concatenate([[reference], curve_reward[order]])
    return float(np.interp(kl, xs, ys)) if kl <= xs[-1] else math.nan


def frontier(cfg: dict, inputs: Inputs) -> dict:
    """Everything the optimum table and Figure 3 show, per model, on the test prompts: the reference, the optimum
    over betas (with its effective sample size and whether it is trusted), and each trained policy's sampled reward,
    gain over the reference, final KL, KL-matched regret and, where pi*(beta) is its target, share of its gain."""
    samples = inputs.reference_samples()
    per_prompt = inputs.per_prompt("sampled_true_reward")
    kl = inputs.kl()
    final_kl = kl.sort_values("step").groupby(["model", "method", "ablation", "seed"]).tail(1)
    boot = cfg["score"]["bootstrap"]
    betas = config_lib.trained_betas(cfg)
    out = {}
    for model in [m for m in cfg["models"] if m in set(samples["model"])]:
        prompts, rewards, raw = sample_matrix(samples, model)
        n = rewards.shape[1]
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
                    ess=float(effective_sample_size(rewards, beta).mean()),
                    trusted=trusted(kl_star.mean(), n),
                    per_prompt=best,
                    kl_per_prompt=kl_star,
                    convergence=convergence(rewards, raw, beta),
                )
            )
        optimum = {c["beta"]: c for c in curve}
        good = [c for c in curve if c["trusted"]]
        good_reward = np.array([c["per_prompt"] for c in good]).reshape(len(good), len(prompts))
        good_kl = np.array([c["kl_per_prompt"] for c in good]).reshape(len(good), len(prompts))
        max_trusted_kl = max([c["kl"] for c in good], default=0.0)
        frontier_line = (good_kl.mean(1), good_reward.mean(1), ref_per_prompt.mean())  # optimum_at_kl's curve

        quantiles = within_prompt_quantiles(rewards)
        quantile_optimum = {}
        for beta in quantile_betas(cfg):
            best, kl_star = snis(quantiles, raw, beta)
            quantile_optimum[beta] = dict(
                beta=beta,
                reward=best.mean(),
                reward_ci=_ci(best, cfg),
                kl=kl_star.mean(),
                kl_ci=_ci(kl_star, cfg),
                trusted=trusted(kl_star.mean(), n),
                per_prompt=best,
                regret=optimum_at_kl(*frontier_line, kl_star.mean()) - best.mean(),
            )
        best_of = {}
        for size in cfg["optimum"]["best_of"]:
            if (values := best_of_n(raw, size)) is not None:
                bound = best_of_n_kl_bound(size)
                best_of[size] = dict(
                    n=size,
                    reward=values.mean(),
                    reward_ci=_ci(values, cfg),
                    kl_bound=bound,
                    regret_bound=optimum_at_kl(*frontier_line, bound) - values.mean(),
                    per_prompt=values,
                )
        runs = paired.matrices(per_prompt, model, "test", prompts)
        policies = []
        for (method, ablation), (seeds, values) in runs.items():
            beta = config_lib.run_beta(cfg, method, ablation)
            star = optimum[beta]
            cell = final_kl[
                (final_kl["model"] == model) & (final_kl["method"] == method) & (final_kl["ablation"] == ablation)
            ].set_index("seed")
            kls = np.zeros(len(seeds)) if method == paper.REFERENCE else cell["kl"].reindex(seeds).to_numpy(float)
            gain = values - ref_per_prompt
            seed_idx, prompt_idx = paired.resamples(len(seeds), len(prompts), boot["samples"], boot["seed"])
            reward_b = paired.resampled_means(values, seed_idx, prompt_idx)
            ref_b = ref_per_prompt[prompt_idx].mean(1)
            regret = math.nan
            beyond = bool(kls.mean() > max_trusted_kl)
            regret_b = np.full(len(reward_b), math.nan)
            if not beyond and np.isfinite(kls).all():
                regret = optimum_at_kl(*frontier_line, kls.mean()) - values.mean()
                curve_kl_b = np.stack([good_kl[:, idx].mean(1) for idx in prompt_idx])
                curve_reward_b = np.stack([good_reward[:, idx].mean(1) for idx in prompt_idx])
                kl_b = kls[seed_idx].mean(1)
                regret_b = (
                    np.array(
                        [optimum_at_kl(ck, cr, r, k) for ck, cr, r, k in zip(curve_kl_b, curve_reward_b, ref_b, kl_b)]
                    )
                    - reward_b
                )
            share = share_ci = None
            if method in QUANTILE_METHODS:
                star = quantile_optimum[beta]
            if (method in SHARE_METHODS or method in QUANTILE_METHODS) and star["trusted"]:  # an untrusted optimum
                star_gain = star["per_prompt"] - ref_per_prompt  # has no gain to share
                share = gain.mean() / star_gain.mean()
                share_b = paired.resampled_means(gain, seed_idx, prompt_idx) / star_gain[prompt_idx].mean(1)
                share_ci = paired.percentile(share_b, boot["confidence"])
            policies.append(
                dict(
                    method=method,
                    ablation=ablation,
                    beta=beta,
                    seeds=len(seeds),
                    reward=values.mean(),
                    reward_ci=paired.percentile(reward_b, boot["confidence"]),
                    gain=gain.mean(),
                    gain_ci=paired.percentile(reward_b - ref_b, boot["confidence"]),
                    kl=kls.mean(),
                    kl_seeds=kls,
                    regret=regret,
                    regret_ci=(
                        paired.percentile(regret_b, boot["confidence"]) if np.isfinite(regret_b).all() else None
                    ),
                    beyond_trusted=beyond and method != paper.REFERENCE,
                    share=share,
                    share_ci=share_ci,
                    target_zero_share=zero_share(inputs, model, method, ablation),
                    values=values,
                    regret_b=regret_b,
                )
            )
        out[model] = dict(
            prompts=len(prompts),
            n=n,
            reference=ref_per_prompt.mean(),
            reference_ci=_ci(ref_per_prompt, cfg),
            curve=curve,
            optimum=optimum,
            max_trusted_kl=max_trusted_kl,
            policies=policies,
            quantile_optimum=quantile_optimum,
            best_of=best_of,
            landmarks=landmarks(cfg, policies, best_of),
        )
    return out


def quantile_betas(cfg: dict) -> list[float]:
    """The betas QRPO trains with in this config (its pi*_q is estimated at each)."""
    return sorted(
        {
            config_lib.run_beta(cfg, m, a)
            for a in cfg["ablations"]
            for m in config_lib.ablation_methods(cfg, a)
            if m in QUANTILE_METHODS
        }
    )


def landmarks(cfg: dict, policies: list[dict], best_of: dict) -> list[dict]:
    """Paired comparisons against the landmarks, on the same test prompts: SFT (each prompt's best completion
    imitated) minus best-of-n in true reward, and QRPO's KL-matched regret minus RPO's (same resamples)."""
    boot = cfg["score"]["bootstrap"]
    default = {p["method"]: p for p in policies if p["ablation"] == "default"}
    out = []
    if "sft" in default:
        for size, b in best_of.items():
            diff = default["sft"]["values"] - b["per_prompt"][None, :]
            lo, hi = paired.two_way_ci(diff, boot["samples"], boot["confidence"], boot["seed"])
            out.append(dict(a="sft", b=f"best-of-{size}", metric="true reward", value=float(diff.mean()), ci=(lo, hi)))
    for method in QUANTILE_METHODS:
        mine, rpo = default.get(method), default.get("rpo")
        if mine is None or rpo is None or mine["seeds"] != rpo["seeds"]:
            continue
        if not (np.isfinite(mine["regret_b"]).all() and np.isfinite(rpo["regret_b"]).all()):
            continue  # a KL past the trusted curve has no regret
        diff_b = mine["regret_b"] - rpo["regret_b"]  # the same seed and prompt resamples (same shapes, same seed)
        value = float(mine["regret"] - rpo["regret"])
        out.append(
            dict(
                a=method,
                b="rpo",
                metric="KL-matched regret",
                value=value,
                ci=paired.percentile(diff_b, boot["confidence"]),
            )
        )
    return out


def label(cfg: dict, method: str, ablation: str) -> str:
    name = "Reference" if method == paper.REFERENCE else method.upper()
    return (
        name
        if ablation == "default"
        else f"{name} ({paper.ablation_label(cfg, ablation, config_lib.for_ablation(cfg, ablation))})"
    )
