"""One trainer for every objective in the registry; it knows nothing method-specific beyond what the registry hands it."""
from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rpo import config as config_lib
from rpo import checkpoint, data, kl, modeling, objectives, tracking, value


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


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Step:
    """Turns one micro-batch of training rows into the objective's inputs and its loss.

    Under data parallelism each process holds a slice of the global micro-batch; `acc` (an
    accelerate.Accelerator) supplies what must be global: the token count SFT averages over and
    the mismatched pairs KTO's reference point averages over (TRL gathers those too).
    """

    def __init__(self, cfg, spec, objective, model, tokenizer, value_net, acc=None):
        self.cfg, self.spec, self.objective, self.acc = cfg, spec, objective, acc
        self.model, self.tokenizer, self.value_net = model, tokenizer, value_net
        self.device = acc.device if acc is not None else torch.device("cpu")
        self.kl_pairs = objective.needs_kl_pairs(cfg)
        self.fields = (["reward", *objective.row_fields] + (["ref_logp"] if objective.needs_reference else [])
                       + (["ref_kl_logp"] if self.kl_pairs else []))

    def encode(self, prompts, responses):
        tcfg = self.cfg["train"]
        return modeling.encode(self.tokenizer, self.spec["arch"], prompts, responses, tcfg["max_prompt_len"],
                               tcfg["max_response_len"], self.spec["chat_template"]).to(self.device)

    def _global(self, tensor, op):
        if self.acc is None or self.acc.num_processes == 1:
            return tensor
        return self.acc.reduce(tensor, op) if op == "sum" else self.acc.gather(tensor)

    def __call__(self, part: pd.DataFrame):
        reduction = self.cfg["objective"]["logprob_reduction"]
        batch = self.encode(part["prompt"].tolist(), part["response"].tolist())
        chunk = self.cfg["train"]["logprob_chunk_size"]
        scores = modeling.score(self.model, batch, prompt_repr=getattr(self.value_net, "uses_prompt_repr", False),
                                chunk_size=chunk)
        inputs = {name: torch.tensor(part[name].to_numpy(), dtype=torch.float32, device=self.device) for name in self.fields}
        world = self.acc.num_processes if self.acc is not None else 1
        inputs.update(token_logp_sum=scores.sum_logp, n_tokens=scores.n_tokens,
                      policy_logp=modeling.reduce(scores.sum_logp, scores.n_tokens, reduction),
                      token_normaliser=self._global(scores.n_tokens.sum().float(), "sum") / world)
        if self.value_net is not None:
            inputs["value"] = self.value_net(batch, scores.prompt_repr)
        if self.kl_pairs:
            with torch.no_grad():
                kl_batch = self.encode(part["prompt"].tolist(), part["kl_response"].tolist())
                policy_kl = modeling.reduce(*modeling.sequence_logprobs(self.model, kl_batch, chunk), reduction)
            inputs["policy_kl_logp"] = self._global(policy_kl, "gather")
            inputs["ref_kl_logp"] = self._global(inputs["ref_kl_logp"], "gather")
        loss, metrics = self.objective.loss(inputs, self.cfg)
        n_tokens = int(batch.attention_mask.sum()) + (int(batch.response_mask.sum()) if batch.labels is not None else 0)
        return loss, metrics, n_tokens


def epoch_order(n_rows: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed + epoch))


def make_accelerator(tcfg: dict):
    """CPU or GPU, one process or several (`accelerate launch`); bf16 autocast on GPU by default."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    precision = tcfg["mixed_precision"]
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(cpu=not cuda, mixed_precision=precision)


class _NoRun:
    """Stands in for the MLflow run on every process but the main one."""

    run_id = None

    def log_metrics(self, *args, **kwargs):
        pass

    def log_artifact(self, *args, **kwargs):
        pass


def train(cfg: dict, cell: dict, init_dir, train_path, ref_path, out_dir, base_train_path=None, eval_path=None) -> dict:
    cfg = config_lib.for_cell(cfg, cell["model"], cell["ablation"])
    spec, tcfg = cfg["models"][cell["model"]], cfg["train"]
    objective = objectives.get(cell["method"])
    acc = make_accelerator(tcfg)
    world, rank = acc.num_processes, acc.process_index
    if tcfg["batch_size"] % world:
        raise config_lib.ConfigError(f"config key 'train.batch_size': {tcfg['batch_size']} does not split over {world} processes")
    local = tcfg["batch_size"] // world
    table = training_table(cfg, objective, train_path, ref_path, base_train_path)
    set_seed(cell["seed"])
    model, tokenizer = modeling.load(init_dir, spec["arch"])
    model.train()
    if tcfg["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    if tcfg["lora"]["r"]:
        model = modeling.with_lora(model, tcfg["lora"])
    if tcfg["disable_dropout"]:
        modeling.disable_dropout(model)
    value_net = value.build(cfg, model) if objective.needs_value_model else None

    from transformers import get_scheduler

    per_step = tcfg["batch_size"] * tcfg["grad_accum"]
    steps_per_epoch = max(1, len(table) // per_step)
    total_steps = steps_per_epoch * tcfg["epochs"]
    modules = {"model": model, **({"value": value_net} if value_net is not None else {})}
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=min(tcfg["warmup_steps"], total_steps // 2),
                              num_training_steps=total_steps)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    state = {"step": 0, "tokens": 0, "wall_time_s": 0.0, "history": [], "kl": [], "run_id": None}
    found = checkpoint.latest(ckpt_dir)
    if found is not None:
        state = checkpoint.load(found, modules, optimizer, scheduler)
        acc.print(f"resuming from {found} at step {state['step']} of {total_steps}")
    prepared = acc.prepare(*modules.values(), optimizer)
    wrapped, optimizer = dict(zip(modules, prepared[:-1])), prepared[-1]
    step_fn = Step(cfg, spec, objective, wrapped["model"], tokenizer, wrapped.get("value"), acc)

    kl_tracker = _kl_tracker(cfg, spec, tcfg, init_dir, eval_path, tokenizer, cell["seed"], acc.device) if acc.is_main_process else None
    started = time.perf_counter() - state["wall_time_s"]
    tags = {"data_md5": data.md5(train_path), "processes": str(world)}
    run_ctx = tracking.run(cfg, "train", out_dir, cell, params=cfg, tags=tags, run_id=state["run_id"]) \
        if acc.is_main_process else contextlib.nullcontext(_NoRun())
    with run_ctx as run:
        state["run_id"] = run.run_id
        bar = tqdm(total=total_steps, initial=state["step"], disable=not acc.is_main_process,
                   desc=f"train {cell['model']}/{cell['method']}/{cell['ablation']}/seed{cell['seed']}")
        if state["step"] == 0 and kl_tracker:
            state["kl"].append(kl_tracker(acc.unwrap_model(wrapped["model"]), 0, run))
        order_epoch, order = None, None
        for step in range(state["step"], total_steps):
            epoch, index = divmod(step, steps_per_epoch)
            if epoch != order_epoch:  # one shuffle per epoch, derived from the seed, so a resumed run sees the same
                order_epoch, order = epoch, epoch_order(len(table), cell["seed"], epoch)
            losses, metrics = [], {}
            for micro in range(tcfg["grad_accum"]):
                first = index * per_step + micro * tcfg["batch_size"] + rank * local
                with acc.autocast():
                    loss, metrics, n_tokens = step_fn(table.iloc[order[first:first + local].numpy()])
                acc.backward(loss / tcfg["grad_accum"])
                losses.append(acc.reduce(loss.detach(), "mean").item())
                state["tokens"] += int(acc.reduce(torch.tensor(n_tokens, device=acc.device), "sum"))
            grad_norm = acc.clip_grad_norm_(params, tcfg["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            record = {"loss": sum(losses) / len(losses), "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), **metrics}
            state["history"].append(record)
            if done % tcfg["log_every"] == 0 or done == total_steps:
                run.log_metrics(record, step=done)
            if kl_tracker and (done % tcfg["kl_every"] == 0 or done == total_steps):
                state["kl"].append(kl_tracker(acc.unwrap_model(wrapped["model"]), done, run))
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if tcfg["checkpoint_every"] and done % tcfg["checkpoint_every"] == 0 and done < total_steps:
                state.update(step=done, wall_time_s=time.perf_counter() - started)
                if acc.is_main_process:
                    checkpoint.save(ckpt_dir, {k: acc.unwrap_model(m) for k, m in wrapped.items()}, optimizer, scheduler, state)
                acc.wait_for_everyone()
        bar.close()
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return {**cell, "steps": total_steps, "history": state["history"]}
        return _finish(cfg, cell, acc.unwrap_model(wrapped["model"]), tokenizer, value_net, out_dir, ckpt_dir, state,
                       total_steps, time.perf_counter() - started, len(table), run, acc.mixed_precision)


def model_card(cfg: dict, cell: dict, summary: dict) -> str:
    obj, tcfg = cfg["objective"], cfg["train"]
    spec = cfg["models"][cell["model"]]
    lines = [
        f"# {cell['model']} / {cell['method'].upper()} / {cell['ablation']} / seed {cell['seed']}",
        "",
        f"Trained by rpo-pipeline (config `{cfg['name']}`) from `{spec['path'] or 'a tiny ' + spec['arch'] + ' model built from scratch'}`.",
        "",
        f"- objective: {cell['method']} (beta {obj['beta']}, sequence log-prob reduction `{obj['logprob_reduction']}`"
        + (f", V_hat estimator `{obj['rpo']['estimator']}`" if cell["method"] == "rpo" else "") + ")",
        f"- training: {summary['steps']} optimizer steps over {summary['rows']} rows, batch {tcfg['batch_size']} x "
        f"{tcfg['grad_accum']}, AdamW lr {tcfg['lr']}, {tcfg['warmup_steps']} warmup steps then linear decay",
        f"- loss: {summary['first_loss']:.4f} at the first step, {summary['final_loss']:.4f} at the last",
        f"- throughput: {summary['samples_per_s']:.1f} samples/s, {summary['tokens_per_s']:.0f} tokens/s, "
        f"peak memory {summary['peak_memory_mb']:.0f} MB, {summary['wall_time_s']:.1f} s",
        f"- MLflow run: {summary['mlflow_run_id']}",
        "",
    ]
    return "\n".join(lines)


def _kl_tracker(cfg, spec, tcfg, init_dir, eval_path, tokenizer, seed, device):
    """A function (policy, step) -> KL record, or None when KL tracking is off. Loads the reference model,
    which training itself never needs (its log-probs are cached)."""
    if not tcfg["kl_every"] or eval_path is None:
        return None
    reference, _ = modeling.load(init_dir, spec["arch"])
    reference.to(device).eval()
    prompts = pd.read_parquet(eval_path)["prompt"].tolist()[: tcfg["kl_prompts"]]

    def track(policy, step, run):
        record = {"step": step, **kl.estimate(policy, reference, tokenizer, spec["arch"], prompts, tcfg["max_prompt_len"],
                                              tcfg["kl_max_new_tokens"], seed=seed * 7919 + step,
                                              chat_template=spec["chat_template"])}
        run.log_metrics({"kl": record["kl"], "kl_std": record["kl_std"]}, step=step)
        return record

    return track


def _finish(cfg, cell, model, tokenizer, value_net, out_dir, ckpt_dir, state, total_steps, wall, n_rows, run,
            precision="no"):
    if hasattr(model, "merge_and_unload"):  # LoRA: save plain weights that AutoModel loads
        model = model.merge_and_unload()
    model.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    if value_net is not None:
        torch.save(value_net.state_dict(), out_dir / "model" / "value_model.pt")
    history = state["history"]
    losses = [h["loss"] for h in history]
    tail = losses[-max(1, len(losses) // 10):]
    summary = {
        **cell,
        "steps": total_steps,
        "rows": n_rows,
        "wall_time_s": wall,
        "tokens_per_s": state["tokens"] / wall,
        "samples_per_s": total_steps * cfg["train"]["batch_size"] * cfg["train"]["grad_accum"] / wall,
        "peak_memory_mb": peak_memory_mb(),
        "device": str(next(model.parameters()).device),
        "mixed_precision": str(precision),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "final_loss_last10pct_mean": sum(tail) / len(tail) if losses else None,
        "mlflow_run_id": run.run_id,
    }
    run.log_metrics({k: summary[k] for k in ("wall_time_s", "tokens_per_s", "samples_per_s", "peak_memory_mb")})
    kl_columns = ["step", "kl", "kl_std", "kl_samples", "kl_response_tokens", *cell]
    pd.DataFrame(state["kl"], columns=kl_columns[:5]).assign(**cell)[kl_columns].to_csv(out_dir / "kl.csv", index=False)
    run.log_artifact(out_dir / "kl.csv")
    (out_dir / "train.json").write_text(json.dumps(summary, indent=2))
    run.log_artifact(out_dir / "train.json")
    card = out_dir / "model" / "README.md"
    card.write_text(model_card(cfg, cell, summary))
    run.log_artifact(card)
    checkpoint.remove(ckpt_dir)
    return summary
