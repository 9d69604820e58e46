"""The training table an objective reads: the training rows with their cached reference log-probs, KTO's KL pairs,
and the columns the objective's `prepare` adds (V_hat for RPO, desirability for KTO, quantile rewards for QRPO)."""

from __future__ import annotations

import pandas as pd
import torch

from rpo.models import logprobs


def _reduced(ref: pd.DataFrame, sum_col: str, count_col: str, reduction: str):
    return logprobs.reduce(
        torch.tensor(ref[sum_col].to_numpy()), torch.tensor(ref[count_col].to_numpy()), reduction
    ).numpy()


def training_table(
    cfg: dict, objective, train_path, ref_path, base_train_path=None, ref_rewards_path=None
) -> pd.DataFrame:
    """The training rows with what the objective reads: cached reference log-probs, KL pairs, its own columns.

    The cache is aligned with the full training table (`base_train_path`); an ablation's variant table
    (a density subset, or noisy rewards) points into it through its `row` column.
    """
    table = pd.read_parquet(train_path)
    if not objective.needs_reference:
        return _prepared(cfg, objective, table, ref_rewards_path)
    if ref_path is None:
        raise ValueError(f"objective '{objective.name}' needs cached reference log-probs (--ref)")
    ref = pd.read_parquet(ref_path)
    rows = table["row"].to_numpy()
    if (
        rows.max(initial=-1) >= len(ref)
        or not (ref["prompt_id"].to_numpy()[rows] == table["prompt_id"].to_numpy()).all()
    ):
        raise ValueError(f"{ref_path}: reference log-probs do not match the rows of {train_path}; rebuild them")
    ref = ref.iloc[rows].reset_index(drop=True)
    reduction = cfg["objective"]["logprob_reduction"]
    table = table.assign(ref_logp=_reduced(ref, "ref_logp_sum", "n_tokens", reduction))
    if objective.needs_kl_pairs(cfg):
        if "kl_row" not in ref:
            raise ValueError(f"{ref_path}: no KL-pair log-probs; they are computed when 'kto' is in methods")
        responses = pd.read_parquet(base_train_path or train_path, columns=["response"])["response"].to_numpy()
        table = table.assign(
            kl_response=responses[ref["kl_row"].to_numpy()],
            ref_kl_logp=_reduced(ref, "ref_kl_logp_sum", "kl_n_tokens", reduction),
        )
    return _prepared(cfg, objective, table, ref_rewards_path)


def _prepared(cfg: dict, objective, table: pd.DataFrame, ref_rewards_path) -> pd.DataFrame:
    if not objective.needs_reference_rewards:
        return objective.prepare(table, cfg)
    rewards = None if ref_rewards_path is None else pd.read_parquet(ref_rewards_path, columns=["prompt_id", "reward"])
    try:
        return objective.prepare(table, cfg, reference_rewards=rewards)
    except ValueError as exc:
        raise ValueError(f"{ref_rewards_path or 'the training table'}: {exc}") from exc
