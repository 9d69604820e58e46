"""One trainer for every objective in the registry; it knows nothing method-specific beyond what the registry hands it."""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rpo import config as config_lib
from rpo import data, modeling, objectives, tracking, value
from rpo.reference import batch_slices


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _reduced(ref: pd.DataFrame, sum_col: str, count_col: str, reduction: str):
    return modeling.reduce(torch.tensor(ref[sum_col].to_numpy()), torch.tensor(ref[count_col].to_numpy()), reduction).numpy()


def training_table(cfg: dict, objective, train_path, ref_path, base_train_path=None) -> pd.DataFrame:
    """The training rows with what the objective reads: cached reference log-probs, KL pairs, its own columns.

    The cache is aligned with the full training table (`base_train_path`); an ablation's variant table
    (a density subset, or noisy rewards) points into it through its `row` column.
    """
    table = pd.read_parquet(train_path)
    if not objective.needs_reference:
        return objective.prepare(table, cfg)
    if ref_path is None:
        raise ValueError(f"objective '{objective.name}' needs cached reference log-probs (--ref)")
    ref = pd.read_parquet(ref_path)
    rows = table["row"].to_numpy()
    if rows.max(initial=-1) >= len(ref) or not (ref["prompt_id"].to_numpy()[rows] == table["prompt_id"].to_numpy()).all():
        raise ValueError(f"{ref_path}: reference log-probs do not match the rows of {train_path}; rebuild them")
    ref = ref.iloc[rows].reset_index(drop=True)
    reduction = cfg["objective"]["logprob_reduction"]
    table = table.assign(ref_logp=_reduced(ref, "ref_logp_sum", "n_tokens", reduction))
    if objective.needs_kl_pairs(cfg):
        if "kl_row" not in ref:
            raise ValueError(f"{ref_path}: no KL-pair log-probs; they are computed when 'kto' is in methods")
        responses = pd.read_parquet(base_train_path or train_path, columns=["response"])["response"].to_numpy()
        table = table.assign(kl_response=responses[ref["kl_row"].to_numpy()],
                             ref_kl_logp=_reduced(ref, "ref_kl_logp_sum", "kl_n_tokens", reduction))
    return objective.prepare(table, cfg)


def train(cfg: dict, cell: dict, init_dir, train_path, ref_path, out_dir, base_train_path=None) -> dict:
    cfg = config_lib.for_ablation(cfg, cell["ablation"])
    spec, tcfg = cfg["models"][cell["model"]], cfg["train"]
    objective = objectives.get(cell["method"])
    table = training_table(cfg, objective, train_path, ref_path, base_train_path)
    set_seed(cell["seed"])
    model, tokenizer = modeling.load(init_dir, spec["arch"])
    model.train()
    if tcfg["disable_dropout"]:
        modeling.disable_dropout(model)
    value_net = value.build(cfg, model) if objective.needs_value_model else None
    kl_pairs = objective.needs_kl_pairs(cfg)

    from transformers import get_scheduler

    order = torch.randperm(len(table), generator=torch.Generator().manual_seed(cell["seed"]))
    steps_per_epoch = max(1, len(table) // (tcfg["batch_size"] * tcfg["grad_accum"]))
    total_steps = steps_per_epoch * tcfg["epochs"]
    params = list(model.parameters()) + (list(value_net.parameters()) if value_net is not None else [])
    optimizer = torch.optim.AdamW(params, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=min(tcfg["warmup_steps"], total_steps // 2),
                              num_training_steps=total_steps)
    fields = ["reward", *objective.row_fields] + (["ref_logp"] if objective.needs_reference else []) + (["ref_kl_logp"] if kl_pairs else [])
    reduction = cfg["objective"]["logprob_reduction"]

    out_dir = Path(out_dir)
    history, tokens, step = [], 0, 0
    start = time.perf_counter()
    with tracking.run(cfg, "train", cell, params=cfg, tags={"data_md5": data.md5(train_path)}) as run:
        import mlflow

        progress = tqdm(total=total_steps, desc=f"train {cell['model']}/{cell['method']}/{cell['ablation']}/seed{cell['seed']}")
        micro = batch_slices(steps_per_epoch * tcfg["batch_size"] * tcfg["grad_accum"], tcfg["batch_size"])
        for epoch in range(tcfg["epochs"]):
            if epoch:
                order = torch.randperm(len(table), generator=torch.Generator().manual_seed(cell["seed"] + epoch))
            for i, rows in enumerate(micro):
                part = table.iloc[order[rows].numpy()]
                batch = modeling.encode(tokenizer, spec["arch"], part["prompt"].tolist(), part["response"].tolist(),
                                        tcfg["max_prompt_len"], tcfg["max_response_len"])
                scores = modeling.score(model, batch, prompt_repr=getattr(value_net, "uses_prompt_repr", False))
                inputs = {name: torch.tensor(part[name].to_numpy(), dtype=torch.float32) for name in fields}
                inputs.update(token_logp_sum=scores.sum_logp, n_tokens=scores.n_tokens,
                              policy_logp=modeling.reduce(scores.sum_logp, scores.n_tokens, reduction))
                if value_net is not None:
                    inputs["value"] = value_net(batch, scores.prompt_repr)
                if kl_pairs:
                    with torch.no_grad():
                        kl_batch = modeling.encode(tokenizer, spec["arch"], part["prompt"].tolist(), part["kl_response"].tolist(),
                                                   tcfg["max_prompt_len"], tcfg["max_response_len"])
                        inputs["policy_kl_logp"] = modeling.reduce(*modeling.sequence_logprobs(model, kl_batch), reduction)
                loss, metrics = objective.loss(inputs, cfg)
                (loss / tcfg["grad_accum"]).backward()
                tokens += int(batch.attention_mask.sum()) + (int(batch.response_mask.sum()) if batch.labels is not None else 0)
                if (i + 1) % tcfg["grad_accum"]:
                    continue
                grad_norm = torch.nn.utils.clip_grad_norm_(params, tcfg["max_grad_norm"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                record = {"loss": loss.item(), "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), **metrics}
                history.append(record)
                if step % tcfg["log_every"] == 0 or step == total_steps:
                    mlflow.log_metrics(record, step=step)
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.4f}")
        progress.close()
        wall = time.perf_counter() - start
        model.save_pretrained(out_dir / "model")
        tokenizer.save_pretrained(out_dir / "model")
        summary = {
            **cell,
            "steps": step,
            "wall_time_s": wall,
            "tokens_per_s": tokens / wall,
            "first_loss": history[0]["loss"] if history else None,
            "final_loss": history[-1]["loss"] if history else None,
            "mlflow_run_id": run.info.run_id,
        }
        mlflow.log_metrics({"wall_time_s": wall, "tokens_per_s": summary["tokens_per_s"]})
        (out_dir / "train.json").write_text(json.dumps(summary, indent=2))
        mlflow.log_artifact(str(out_dir / "train.json"))
    return summary
