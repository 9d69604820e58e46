"""Training objectives as pure functions over per-sequence log-probs and rewards, in one registry.

Each objective is `loss(inputs, cfg) -> (loss, metrics)`, the metrics 0-d tensors (read once per log interval, not
per step: no host synchronisation); `inputs` holds tensors of shape [B]:
  policy_logp, ref_logp        sequence log-probs, reduced as `objective.logprob_reduction` says
  token_logp_sum, n_tokens     summed response log-prob and response token count (token-level NLL)
  reward                       standardised reward
  value                        DRO only: V_phi(x) from the value model
  policy_kl_logp, ref_kl_logp  KTO only: log-probs of mismatched (prompt, other completion) pairs
  plus the per-row columns the objective's `prepare` added to the training table (`row_fields`).
`prepare(table, cfg)` runs once over the whole training table before training (no gradient); an objective that
declares `needs_reference_rewards` gets `prepare(table, cfg, reference_rewards=frame or None)` (QRPO).
The equations, and where the authors' released code differs, are in docs/objectives.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch


def group_logsumexp(values: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """log sum_j exp(values_j) within each group, stable for any magnitude."""
    peak = torch.full((n_groups,), -math.inf, dtype=values.dtype).scatter_reduce(0, groups, values, reduce="amax")
    total = torch.zeros(n_groups, dtype=values.dtype).index_add_(0, groups, torch.exp(values - peak[groups]))
    return peak + torch.log(total)


def partition_values(rewards, groups, beta: float, estimator: str, ref_logp=None) -> torch.Tensor:
    """V_hat(x) for each group (prompt) 0..max(groups); no gradient.

    mean:         beta * log( 1/n sum_j exp(r_j / beta) )            (paper, eq. 19)
    ref_weighted: beta * log( sum_j pi_ref(y_j|x) exp(r_j / beta) )   (released code)
    none:         0, so the regression target is r / beta            ("w/o V_hat" ablation)
    """
    rewards = torch.tensor(np.asarray(rewards), dtype=torch.float64)
    groups = torch.tensor(np.asarray(groups), dtype=torch.long)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if estimator == "none":
        return torch.zeros(n_groups, dtype=torch.float64)
    if estimator == "mean":
        counts = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, groups, torch.ones_like(rewards))
        return beta * (group_logsumexp(rewards / beta, groups, n_groups) - torch.log(counts))
    if estimator == "ref_weighted":
        if ref_logp is None:
            raise ValueError("estimator 'ref_weighted' needs reference log-probs")
        ref_logp = torch.tensor(np.asarray(ref_logp), dtype=torch.float64)
        return beta * group_logsumexp(ref_logp + rewards / beta, groups, n_groups)
    raise ValueError(f"unknown V_hat estimator '{estimator}'")


def prompt_codes(table) -> np.ndarray:
    return table["prompt_id"].astype("category").cat.codes.to_numpy().copy()


# --- RPO ---------------------------------------------------------------------------------------


def rpo_prepare(table, cfg: dict):
    obj = cfg["objective"]
    codes = prompt_codes(table)
    ref = table["ref_logp"].to_numpy() if "ref_logp" in table else None
    v_hat = partition_values(table["reward"].to_numpy(), codes, obj["beta"], obj["rpo"]["estimator"], ref)
    return table.assign(v_hat=v_hat.numpy()[codes])


def rpo_target_zero_share(table) -> float:
    """Share of prompts on which every row's regression target (r - V_hat)/beta is 0: one completion (or equal
    rewards) under the paper's mean estimator gives V_hat = r, so nothing is learned there but noise."""
    zero = pd.Series(np.isclose(table["reward"] - table["v_hat"], 0.0, rtol=0.0, atol=1e-9))
    return float(zero.groupby(table["prompt_id"].to_numpy()).all().mean()) if len(table) else 0.0


def rpo_loss(inputs: dict, cfg: dict):
    """0.5 * mean( (h - (r - V_hat)/beta)^2 ), h = log pi_theta - log pi_ref."""
    beta = cfg["objective"]["beta"]
    log_ratio = inputs["policy_logp"] - inputs["ref_logp"]
    target = ((inputs["reward"] - inputs["v_hat"]) / beta).to(log_ratio.dtype)
    delta = log_ratio - target
    loss = 0.5 * (delta**2).mean()
    return loss, {"log_ratio": log_ratio.mean().detach(), "residual_abs": delta.abs().mean().detach()}


# --- QRPO ------------------------------------------------------------------------------------


def quantile_log_partition(beta: float, exact: bool = True) -> float:
    """log Z for a reward uniform on [0, 1] under the reference: Z = int_0^1 exp(q/beta) dq = beta (exp(1/beta) - 1).
    `exact=False` is the authors' released simplification log beta + 1/beta, which drops log(1 - exp(-1/beta))."""
    simplified = math.log(beta) + 1.0 / beta
    return simplified + math.log(-math.expm1(-1.0 / beta)) if exact else simplified


def quantile_rewards(rewards, groups, ref_rewards, ref_groups) -> np.ndarray:
    """q_i = the share of row i's prompt's reference rewards at or below its reward r_i (groups are prompt keys)."""
    rewards, groups = np.asarray(rewards, float), np.asarray(groups)
    ref = pd.DataFrame({"group": np.asarray(ref_groups), "reward": np.asarray(ref_rewards, float)})
    sorted_by_group = {g: np.sort(part.to_numpy()) for g, part in ref.groupby("group")["reward"]}
    out = np.empty(len(rewards))
    for i, (group, reward) in enumerate(zip(groups, rewards)):
        pool = sorted_by_group[group]
        out[i] = np.searchsorted(pool, reward, side="right") / len(pool)
    return out


def qrpo_prepare(table, cfg: dict, reference_rewards=None):
    """The quantile reward of each row against its prompt's reference rewards: K completions per prompt sampled from
    the reference and scored (`reference_rewards`: prompt_id, reward on the training scale), or, where none were drawn
    (a dataset without a reward model), the prompt's own completions in the training table."""
    pool = table if reference_rewards is None else reference_rewards
    bad = int((~np.isfinite(pool["reward"].to_numpy(float))).sum())
    if bad:
        raise ValueError(f"QRPO: {bad} reference rewards are not finite numbers; rebuild them")
    missing = sorted(set(table["prompt_id"]) - set(pool["prompt_id"]))
    if missing:
        raise ValueError(
            f"QRPO: {len(missing)} training prompts have no reference rewards (first: {missing[0]}); rebuild them"
        )
    q = quantile_rewards(table["reward"], table["prompt_id"], pool["reward"], pool["prompt_id"])
    return table.assign(quantile=q)


def qrpo_loss(inputs: dict, cfg: dict):
    """mean( (q - beta log Z - beta h)^2 ), h = log pi_theta - log pi_ref, Z = beta (exp(1/beta) - 1) (Matrenok et al. 2025)."""
    beta = cfg["objective"]["beta"]
    log_z = quantile_log_partition(beta, cfg["objective"]["qrpo"]["log_z"] == "exact")
    log_ratio = inputs["policy_logp"] - inputs["ref_logp"]
    delta = inputs["quantile"].to(log_ratio.dtype) - beta * log_z - beta * log_ratio
    return (delta**2).mean(), {"log_ratio": log_ratio.mean().detach(), "residual_abs": delta.abs().mean().detach()}


# --- DRO ---------------------------------------------------------------------------------------


def dro_loss(inputs: dict, cfg: dict):
    """0.5 * mean( (r - V_phi(x) - beta*h)^2 ), policy and value trained jointly.

    decoupled: the policy term sees V through a stop-gradient and the value term sees h through one,
    so each term updates one model only; the value term is weighted by `value_loss_weight`. With weight 1
    the summed gradient equals the joint one (a test shows it); other weights set the value model's pace.
    """
    beta = cfg["objective"]["beta"]
    log_ratio = inputs["policy_logp"] - inputs["ref_logp"]
    reward, value = inputs["reward"].to(log_ratio.dtype), inputs["value"].to(log_ratio.dtype)
    if cfg["objective"]["dro"]["decoupled"]:
        policy_term = 0.5 * ((reward - value.detach() - beta * log_ratio) ** 2).mean()
        value_term = 0.5 * ((reward - value - beta * log_ratio.detach()) ** 2).mean()
        loss = policy_term + cfg["objective"]["dro"]["value_loss_weight"] * value_term
    else:
        loss = 0.5 * ((reward - value - beta * log_ratio) ** 2).mean()
    return loss, {"log_ratio": log_ratio.mean().detach(), "value": value.mean().detach()}


# --- KTO ---------------------------------------------------------------------------------------


def kto_prepare(table, cfg: dict):
    threshold = cfg["objective"]["kto"]["desirable_threshold"]
    return table.assign(desirable=(table["reward"] >= threshold).astype("float32"))


def kto_reference_point(inputs: dict, cfg: dict) -> torch.Tensor:
    """z0, detached. `mismatched` (TRL's KTOTrainer): mean KL over mismatched pairs, clamped at 0.
    `batch_mean` (released code): mean of h over the batch, not clamped."""
    if cfg["objective"]["kto"]["reference_point"] == "mismatched":
        return (inputs["policy_kl_logp"] - inputs["ref_kl_logp"]).mean().detach().clamp(min=0)
    return (inputs["policy_logp"] - inputs["ref_logp"]).mean().detach()


def kto_loss(inputs: dict, cfg: dict):
    """mean over the batch of lambda_y - v(x, y):
    desirable:   lambda_D * (1 - sigmoid(beta * (h - z0)))
    undesirable: lambda_U * (1 - sigmoid(beta * (z0 - h)))"""
    obj = cfg["objective"]
    kto = obj["kto"]
    log_ratio = inputs["policy_logp"] - inputs["ref_logp"]
    z0 = kto_reference_point(inputs, cfg)
    margin = obj["beta"] * (log_ratio - z0)
    if kto["clamp"] is not None:  # the released code clamps beta*(h - z0) to +-20
        margin = margin.clamp(-kto["clamp"], kto["clamp"])
    desirable = inputs["desirable"].bool()
    losses = torch.where(
        desirable,
        kto["desirable_weight"] * (1 - torch.sigmoid(margin)),
        kto["undesirable_weight"] * (1 - torch.sigmoid(-margin)),
    )
    return losses.mean(), {
        "log_ratio": log_ratio.mean().detach(),
        "z0": z0,
        "desirable_share": desirable.float().mean(),
    }


# --- SFT ---------------------------------------------------------------------------------------


def sft_prepare(table, cfg: dict):
    """SFT mimics high-quality responses (the paper's baseline): each prompt's best completion by raw reward (the
    first in table order among equals) with `best_only`, then those at or above `min_reward` if set."""
    sft = cfg["objective"]["sft"]
    kept = table
    if sft["best_only"]:
        kept = kept.loc[kept.groupby("prompt_id", sort=False)["reward_raw"].idxmax().sort_values()]
    if sft["min_reward"] is not None:
        kept = kept[kept["reward_raw"] >= sft["min_reward"]]
        if kept.empty:
            raise ValueError(
                f"config key 'objective.sft.min_reward': no training row has reward_raw >= {sft['min_reward']}"
            )
    return kept.reset_index(drop=True)


def sft_loss(inputs: dict, cfg: dict):
    """Mean token negative log-likelihood of the responses in the batch. `token_normaliser`, when given,
    is the token count to divide by: under data parallelism the trainer passes the global count over the
    number of processes, so the averaged gradients are those of the global token mean."""
    normaliser = inputs.get("token_normaliser", inputs["n_tokens"].sum())
    nll = -inputs["token_logp_sum"].sum() / normaliser.clamp(min=1)
    return nll, {"nll": nll.detach()}


# --- registry ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    name: str
    loss: Callable
    needs_reference: bool = True
    needs_kl_pairs: Callable[[dict], bool] = field(default=lambda cfg: False)
    needs_value_model: bool = False
    # reference rewards per training prompt, handed to `prepare` (QRPO's quantiles): a file of K reference samples
    # scored by the true reward where the config draws them, else None (the prompt's own completions)
    needs_reference_rewards: bool = False
    prepare: Callable = field(default=lambda table, cfg: table)
    row_fields: tuple[str, ...] = ()  # columns of the prepared table the loss reads per row
    # share of prompts of the prepared table whose target is identically zero (None: not defined for the method)
    target_zero_share: Callable = field(default=lambda table: None)


REGISTRY = {
    "sft": Objective("sft", sft_loss, needs_reference=False, prepare=sft_prepare),
    "rpo": Objective(
        "rpo", rpo_loss, prepare=rpo_prepare, row_fields=("v_hat",), target_zero_share=rpo_target_zero_share
    ),
    "qrpo": Objective("qrpo", qrpo_loss, prepare=qrpo_prepare, row_fields=("quantile",), needs_reference_rewards=True),
    "dro": Objective("dro", dro_loss, needs_value_model=True),
    "kto": Objective(
        "kto",
        kto_loss,
        prepare=kto_prepare,
        row_fields=("desirable",),
        needs_kl_pairs=lambda cfg: cfg["objective"]["kto"]["reference_point"] == "mismatched",
    ),
}


def get(name: str) -> Objective:
    if name not in REGISTRY:
        raise KeyError(f"unknown objective '{name}' (have {sorted(REGISTRY)})")
    return REGISTRY[name]


def mismatched_partners(prompt_ids, seed: int = 0) -> np.ndarray:
    """For each row, another row whose completion answers a different prompt (KTO's KL pairs).

    Rows are shuffled and each takes the next row's completion (TRL rotates completions by one
    within a batch); a partner with the same prompt is skipped when another prompt exists.
    """
    prompt_ids = np.asarray(prompt_ids)
    n = len(prompt_ids)
    order = np.random.default_rng(seed).permutation(n)
    partners = np.empty(n, dtype=np.int64)
    for k, row in enumerate(order):
        step = 1
        while step < n and prompt_ids[order[(k + step) % n]] == prompt_ids[row]:
            step += 1
        partners[row] = order[(k + step) % n] if step < n else row
    return partners
