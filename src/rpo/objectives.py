"""Training objectives as pure functions over per-sequence log-probs and rewards, in one registry.

Each objective is `loss(inputs, cfg) -> (loss, metrics)` where `inputs` holds tensors of shape [B]:
  policy_logp, ref_logp  sequence log-probs, reduced as `objective.logprob_reduction` says
  token_logp_sum, n_tokens  summed response log-prob and response token count (for token-level NLL)
  reward                 standardised reward
  plus whatever columns the objective's `prepare` added to the training table (e.g. v_hat).
`prepare(table, cfg)` runs once over the whole training table before training (no gradient).
See ../shared/paper/NOTES.md for the equations and where the released code differs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch


def group_logsumexp(values: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """log sum_j exp(values_j) within each group, stable for any magnitude."""
    values = values.double()
    peak = torch.full((n_groups,), -math.inf, dtype=values.dtype).scatter_reduce(0, groups, values, reduce="amax")
    total = torch.zeros(n_groups, dtype=values.dtype).index_add_(0, groups, torch.exp(values - peak[groups]))
    return peak + torch.log(total)


def partition_values(rewards, groups, beta: float, estimator: str, ref_logp=None) -> torch.Tensor:
    """V_hat(x) per group (prompt) as in RPO; no gradient.

    mean:         beta * log( 1/n sum_j exp(r_j / beta) )            (paper, eq. 19)
    ref_weighted: beta * log( sum_j pi_ref(y_j|x) exp(r_j / beta) )   (released code)
    none:         0, so the target is r / beta                        ("w/o V_hat" ablation)
    """
    rewards = torch.tensor(rewards, dtype=torch.float64)
    groups = torch.tensor(groups, dtype=torch.long)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if estimator == "none":
        return torch.zeros(n_groups, dtype=torch.float64)
    if estimator == "mean":
        counts = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, groups, torch.ones_like(rewards))
        return beta * (group_logsumexp(rewards / beta, groups, n_groups) - torch.log(counts))
    if estimator == "ref_weighted":
        if ref_logp is None:
            raise ValueError("estimator 'ref_weighted' needs reference log-probs")
        ref_logp = torch.tensor(ref_logp, dtype=torch.float64)
        return beta * group_logsumexp(ref_logp + rewards / beta, groups, n_groups)
    raise ValueError(f"unknown V_hat estimator '{estimator}'")


def rpo_prepare(table, cfg: dict):
    obj = cfg["objective"]
    codes = table["prompt_id"].astype("category").cat.codes.to_numpy()
    ref = table["ref_logp"].to_numpy() if "ref_logp" in table else None
    v_hat = partition_values(table["reward"].to_numpy(), codes, obj["beta"], obj["rpo"]["estimator"], ref)
    return table.assign(v_hat=v_hat[codes].numpy())


def rpo_loss(inputs: dict, cfg: dict):
    beta = cfg["objective"]["beta"]
    log_ratio = inputs["policy_logp"] - inputs["ref_logp"]
    target = (inputs["reward"] - inputs["v_hat"]) / beta
    delta = log_ratio - target.to(log_ratio.dtype)
    loss = 0.5 * (delta**2).mean()
    return loss, {"log_ratio": log_ratio.mean().item(), "residual_abs": delta.abs().mean().item()}


def sft_prepare(table, cfg: dict):
    threshold = cfg["objective"]["sft"]["min_reward"]
    if threshold is None:
        return table
    kept = table[table["reward_raw"] >= threshold]
    if kept.empty:
        raise ValueError(f"config key 'objective.sft.min_reward': no training row has reward_raw >= {threshold}")
    return kept.reset_index(drop=True)


def sft_loss(inputs: dict, cfg: dict):
    nll = -inputs["token_logp_sum"].sum() / inputs["n_tokens"].sum().clamp(min=1)
    return nll, {"nll": nll.item()}


@dataclass(frozen=True)
class Objective:
    name: str
    loss: Callable
    needs_reference: bool
    prepare: Callable = field(default=lambda table, cfg: table)
    row_fields: tuple[str, ...] = ()  # columns of the prepared table the loss reads per row


REGISTRY = {
    "sft": Objective("sft", sft_loss, needs_reference=False, prepare=sft_prepare),
    "rpo": Objective("rpo", rpo_loss, needs_reference=True, prepare=rpo_prepare, row_fields=("v_hat",)),
}


def get(name: str) -> Objective:
    if name not in REGISTRY:
        raise KeyError(f"unknown objective '{name}' (have {sorted(REGISTRY)})")
    return REGISTRY[name]
