"""One trainer for every objective in the registry; it knows nothing method-specific beyond what the registry hands it.

`train` = `setup` (config, data, model, optimizer, a checkpoint to resume from) + `step_loop` (optimizer steps,
logging, KL tracking, checkpoints) + `_finish` (the model, its card, train.json and kl.csv).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from tqdm import tqdm
from transformers import get_scheduler

from rpo import config as config_lib
from rpo import io, tracking
from rpo.data.prepare import test_part
from rpo.errors import ConfigError, TrainingError
from rpo.io import md5
from rpo.models import batching, build, generation, value
from rpo.train import checkpoint, kl, objectives
from rpo.train.inputs import training_table
from rpo.train.step import Step


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


GROUP_WINDOW = 50  # optimizer steps' rows sorted by length together (group_by_length); as transformers' sampler


def epoch_order(
    n_rows: int, seed: int, epoch: int, lengths: torch.Tensor | None = None, batch: int = 1
) -> torch.Tensor:
    """The rows of one epoch in training order, derived from the seed (a resumed run sees the same). Given `lengths`:
    rows of similar length share a batch (the shuffle cut into windows of GROUP_WINDOW batches, each sorted by
    length, then the batches shuffled), so less of each batch is padding."""
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n_rows, generator=generator)
    if lengths is None:
        return order
    window = batch * GROUP_WINDOW
    grouped = [part[torch.argsort(lengths[part], descending=True, stable=True)] for part in torch.split(order, window)]
    batches = list(torch.cat(grouped).split(batch))
    whole, tail = (batches[:-1], batches[-1:]) if len(batches[-1]) < batch else (batches, [])
    return torch.cat([whole[i] for i in torch.randperm(len(whole), generator=generator)] + tail)


def make_accelerator(tcfg: dict) -> Accelerator:
    """CPU or GPU, one process or several (`accelerate launch`); bf16 autocast on GPU by default."""
    cuda = torch.cuda.is_available()
    precision = tcfg["mixed_precision"]
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(cpu=not cuda, mixed_precision=precision)


def input_digests(init_dir, *tables) -> dict:
    """What a run reads, by content: the initial model's files and the data tables (None: not used)."""
    digests = {f"init/{name}": digest for name, digest in io.folder_digest(init_dir).items()}
    digests.update({str(t): md5(t) for t in tables if t is not None})
    return digests


def run_fingerprint(cfg: dict, cell: dict, digests: dict) -> str:
    """Everything that shapes a training run: its cell, the resolved objective/train/model settings, the inputs'
    digests and the versions of the libraries doing the arithmetic. A checkpoint with another one is not resumed."""
    import accelerate
    import transformers

    shaping = {
        "cell": cell,
        "objective": cfg["objective"],
        "train": cfg["train"],
        "model": cfg["models"][cell["model"]],
        "inputs": digests,
        "versions": [torch.__version__, transformers.__version__, accelerate.__version__],
    }
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()


class _NoRun:
    """Stands in for the MLflow run on every process but the main one."""

    run_id = None

    def log_metrics(self, *args, **kwargs):
        pass

    def log_artifact(self, *args, **kwargs):
        pass

    def log_input(self, *args, **kwargs):
        pass


@dataclass
class Setup:
    """Everything the step loop needs, ready to run (resumed from a checkpoint when one exists)."""

    cfg: dict
    cell: dict
    acc: Accelerator
    table: pd.DataFrame
    tokenizer: object
    value_net: torch.nn.Module | None
    wrapped: dict  # name -> module as accelerate prepared it
    params: list
    optimizer: object
    scheduler: object
    step_fn: Step
    fingerprint: str
    train_md5: str
    kl_tracker: object  # (policy, step, run) -> KL record, or None
    state: dict  # step, tokens, wall_time_s, history, kl, run_id: what a checkpoint keeps
    total_steps: int
    steps_per_epoch: int
    out_dir: Path
    ckpt_dir: Path
    truncation: dict  # rows and tokens the length limits cut (batching.truncation)
    clock: list = field(default_factory=list)  # (step, perf_counter) at each read-back: the steady-state step time


def setup(
    cfg: dict,
    cell: dict,
    init_dir,
    train_path,
    ref_path,
    out_dir,
    base_train_path=None,
    eval_path=None,
    ref_rewards_path=None,
) -> Setup:
    cfg = config_lib.for_run(cfg, cell["model"], cell["method"], cell["ablation"])
    spec, tcfg = cfg["models"][cell["model"]], cfg["train"]
    objective = objectives.get(cell["method"])
    acc = make_accelerator(tcfg)
    world = acc.num_processes
    if tcfg["batch_size"] % world:
        raise ConfigError(f"config key 'train.batch_size': {tcfg['batch_size']} does not split over {world} processes")
    table = training_table(cfg, objective, train_path, ref_path, base_train_path, ref_rewards_path)
    set_seed(cell["seed"])
    model, tokenizer = build.load(init_dir, spec["arch"])
    model.train()
    if tcfg["gradient_checkpointing"]:
        model.gradient_checkpointing_enable()
    if tcfg["lora"]["r"]:
        model = build.with_lora(model, tcfg["lora"])
    if tcfg["disable_dropout"]:
        build.disable_dropout(model)
    value_net = value.build(cfg, model) if objective.needs_value_model else None

    steps_per_epoch = max(1, len(table) // (tcfg["batch_size"] * tcfg["grad_accum"]))
    total_steps = steps_per_epoch * tcfg["epochs"]
    modules = {"model": model, **({"value": value_net} if value_net is not None else {})}
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    scheduler = get_scheduler(
        "linear",
        optimizer,
        num_warmup_steps=min(tcfg["warmup_steps"], total_steps // 2),
        num_training_steps=total_steps,
    )
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    digests = input_digests(init_dir, train_path, ref_path, base_train_path, eval_path, ref_rewards_path)
    fingerprint = run_fingerprint(cfg, cell, digests)
    state = {"step": 0, "tokens": 0, "wall_time_s": 0.0, "history": [], "kl": [], "run_id": None}
    resumed = checkpoint.resume(ckpt_dir, fingerprint, modules, optimizer, scheduler, say=acc.print)
    if resumed is not None:
        state = {k: resumed[k] for k in state}
        acc.print(f"resuming from {ckpt_dir} at step {state['step']} of {total_steps}")
    prepared = acc.prepare(*modules.values(), optimizer)
    wrapped, optimizer = dict(zip(modules, prepared[:-1])), prepared[-1]
    step_fn = Step(cfg, spec, objective, wrapped["model"], tokenizer, wrapped.get("value"), acc, table)
    cut = batching.cut_counts(step_fn.tokenized)
    del cut["per_row"]
    if warning := batching.truncation_warning(cut, f"{train_path} ({cell['model']})"):
        acc.print(warning)
    kl_tracker = (
        _kl_tracker(cfg, spec, tcfg, init_dir, eval_path, tokenizer, cell["seed"], acc.device)
        if acc.is_main_process
        else None
    )
    return Setup(
        cfg,
        cell,
        acc,
        table,
        tokenizer,
        value_net,
        wrapped,
        params,
        optimizer,
        scheduler,
        step_fn,
        fingerprint,
        digests[str(train_path)],
        kl_tracker,
        state,
        total_steps,
        steps_per_epoch,
        out_dir,
        ckpt_dir,
        cut,
    )


def step_loop(s: Setup, run, started: float) -> None:
    """Optimizer steps from where `s.state` stands to the last one; logs, tracks KL and checkpoints on the way.

    Losses, metrics, gradient norms and token counts stay on the device and are read back once per log interval
    (and before a KL estimate or a checkpoint): no host synchronisation inside a step, which on a GPU is the
    difference between waiting on every kernel launch and queueing them."""
    cell, acc, tcfg, state = s.cell, s.acc, s.cfg["train"], s.state
    per_step = tcfg["batch_size"] * tcfg["grad_accum"]
    local = tcfg["batch_size"] // acc.num_processes
    bar = tqdm(
        total=s.total_steps,
        initial=state["step"],
        disable=not acc.is_main_process,
        desc=f"train {cell['model']}/{cell['method']}/{cell['ablation']}/seed{cell['seed']}",
    )
    if state["step"] == 0 and s.kl_tracker:
        state["kl"].append(s.kl_tracker(acc.unwrap_model(s.wrapped["model"]), 0, run))
    order_epoch, order = None, None
    pending = []  # steps not read back yet: (step, lr, loss, grad norm, metrics)
    tokens = torch.zeros((), dtype=torch.long, device=acc.device)
    for step in range(state["step"], s.total_steps):
        epoch, index = divmod(step, s.steps_per_epoch)
        if epoch != order_epoch:  # one shuffle per epoch, derived from the seed, so a resumed run sees the same
            lengths = s.step_fn.pairs.lengths if tcfg["group_by_length"] else None
            order_epoch, order = epoch, epoch_order(len(s.table), cell["seed"], epoch, lengths, per_step)
        loss_sum = 0.0
        for micro in range(tcfg["grad_accum"]):
            first = index * per_step + micro * tcfg["batch_size"] + acc.process_index * local
            with acc.autocast():
                loss, metrics, n_tokens = s.step_fn(order[first : first + local])
            acc.backward(loss / tcfg["grad_accum"])
            loss_sum = loss_sum + acc.reduce(loss.detach().float(), "mean")
            tokens += acc.reduce(n_tokens, "sum")
        grad_norm = acc.clip_grad_norm_(s.params, tcfg["max_grad_norm"] or math.inf)
        s.optimizer.step()
        s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
        done = step + 1
        pending.append((done, s.scheduler.get_last_lr()[0], loss_sum / tcfg["grad_accum"], grad_norm, metrics))
        kl_now = s.kl_tracker and (done % tcfg["kl_every"] == 0 or done == s.total_steps)
        checkpoint_now = tcfg["checkpoint_every"] and done % tcfg["checkpoint_every"] == 0 and done < s.total_steps
        if done % tcfg["log_every"] == 0 or done == s.total_steps or kl_now or checkpoint_now:
            _read_back(pending, state, run, tcfg["log_every"], s.total_steps)
            s.clock.append((done, time.perf_counter()))
            state["tokens"] += int(tokens)
            tokens.zero_()
            bar.set_postfix(loss=f"{state['history'][-1]['loss']:.4f}")
            pending = []
        if kl_now:
            state["kl"].append(s.kl_tracker(acc.unwrap_model(s.wrapped["model"]), done, run))
        bar.update(1)
        if checkpoint_now:
            state.update(step=done, wall_time_s=time.perf_counter() - started)
            if acc.is_main_process:
                checkpoint.save(
                    s.ckpt_dir,
                    {k: acc.unwrap_model(m) for k, m in s.wrapped.items()},
                    s.optimizer,
                    s.scheduler,
                    state,
                    s.fingerprint,
                )
            acc.wait_for_everyone()
    bar.close()
    acc.wait_for_everyone()


def _read_back(pending: list, state: dict, run, log_every: int, total_steps: int) -> None:
    """The pending steps' values in one device-to-host copy, into the history and MLflow; stops at the first step
    whose loss or gradient norm is not finite (its weights are never saved: a checkpoint or the final model is only
    written after this check)."""
    names = list(pending[0][4])

    def row(loss, norm, metrics):  # a metric may also be a plain number
        return torch.stack([torch.as_tensor(v, device=loss.device).float() for v in (loss, norm, *metrics.values())])

    values = torch.stack([row(loss, norm, metrics) for _, _, loss, norm, metrics in pending]).tolist()
    for (done, lr, *_), (loss, grad_norm, *metric_values) in zip(pending, values):
        _refuse_non_finite(done, loss, grad_norm)
        record = {"loss": loss, "lr": lr, "grad_norm": grad_norm, **dict(zip(names, metric_values))}
        state["history"].append(record)
        if done % log_every == 0 or done == total_steps:
            run.log_metrics(record, step=done)


def steady_step_s(clock: list, total_steps: int) -> float | None:
    """Seconds per step between the first read-back after a tenth of the steps and the last one (None: too few)."""
    after = [(step, t) for step, t in clock if step >= max(1, total_steps // 10)]
    if len(after) < 2:
        return None
    (first, t0), (last, t1) = after[0], after[-1]
    return (t1 - t0) / (last - first)


def _refuse_non_finite(step: int, loss: float, grad_norm: float) -> None:
    """Stop before a non-finite update reaches a saved model: no NaN model is ever written as finished."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    raise TrainingError(
        f"step {step}: loss {loss} and gradient norm {grad_norm}: not finite; training stopped and no model was "
        "written (lower train.lr, or check the rewards and objective.beta)"
    )


def train(cfg: dict, cell: dict, init_dir, train_path, *inputs, **named_inputs) -> dict:
    """Train one cell; the inputs after the training table are `setup`'s (reference cache, output folder, ...)."""
    s = setup(cfg, cell, init_dir, train_path, *inputs, **named_inputs)
    acc = s.acc
    started = time.perf_counter() - s.state["wall_time_s"]
    tags = {"data_md5": s.train_md5, "processes": str(acc.num_processes)}
    run_ctx = (
        tracking.run(s.cfg, "train", s.out_dir, cell, params=s.cfg, tags=tags, run_id=s.state["run_id"])
        if acc.is_main_process
        else contextlib.nullcontext(_NoRun())
    )
    with run_ctx as run:
        if s.state["run_id"] is None:  # a resumed run logged its input when it started
            run.log_input(train_path, "training", s.train_md5)
        s.state["run_id"] = run.run_id
        step_loop(s, run, started)
        if not acc.is_main_process:
            return {**cell, "steps": s.total_steps, "history": s.state["history"]}
        return _finish(
            s.cfg,
            cell,
            acc.unwrap_model(s.wrapped["model"]),
            s.tokenizer,
            s.value_net,
            s.out_dir,
            s.ckpt_dir,
            s.state,
            s.total_steps,
            time.perf_counter() - started,
            s.table,
            run,
            acc.mixed_precision,
            s.truncation,
            steady_step_s(s.clock, s.total_steps),
        )


def model_card(cfg: dict, cell: dict, summary: dict) -> str:
    obj, tcfg = cfg["objective"], cfg["train"]
    spec = cfg["models"][cell["model"]]
    lines = [
        f"# {cell['model']} / {cell['method'].upper()} / {cell['ablation']} / seed {cell['seed']}",
        "",
        f"Trained by rpo-pipeline (config `{cfg['name']}`) from `{spec['path'] or 'a tiny ' + spec['arch'] + ' model built from scratch'}`.",
        "",
        f"- objective: {cell['method']} (beta {obj['beta']}, sequence log-prob reduction `{obj['logprob_reduction']}`"
        + (f", V_hat estimator `{obj['rpo']['estimator']}`" if cell["method"] == "rpo" else "")
        + ")",
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
    reference, _ = build.load(init_dir, spec["arch"])
    reference.to(device).eval()
    prompts = test_part(pd.read_parquet(eval_path))["prompt"].tolist()[: tcfg["kl_prompts"]]

    def track(policy, step, run):
        record = {
            "step": step,
            **kl.estimate(
                policy,
                reference,
                tokenizer,
                spec["arch"],
                prompts,
                tcfg["max_prompt_len"],
                config_lib.kl_max_new_tokens(cfg),
                seed=seed * 7919 + step,
                chat_template=spec["chat_template"],
                estimator=tcfg["kl_estimator"],
                batch_size=generation.prompts_per_batch(cfg["generate"], 1),
            ),
        }
        run.log_metrics({"kl": record["kl"], "kl_std": record["kl_std"]}, step=step)
        return record

    return track


def _finish(
    cfg,
    cell,
    model,
    tokenizer,
    value_net,
    out_dir,
    ckpt_dir,
    state,
    total_steps,
    wall,
    table,
    run,
    precision="no",
    truncation=None,
    steady_step=None,
):
    if hasattr(model, "merge_and_unload"):  # LoRA: save plain weights that AutoModel loads
        model = model.merge_and_unload()
    with io.atomic(out_dir / "model") as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if value_net is not None:
            torch.save(value_net.state_dict(), folder / "value_model.pt")
    history = state["history"]
    losses = [h["loss"] for h in history]
    tail = losses[-max(1, len(losses) // 10) :]
    summary = {
        **cell,
        "steps": total_steps,
        "rows": len(table),
        # share of training prompts on which the objective's target is identically zero (RPO: V_hat = r)
        "target_zero_share": objectives.get(cell["method"]).target_zero_share(table),
        # rows whose prompt or response the length limits cut, and the tokens cut
        "truncation": truncation,
        "wall_time_s": wall,
        "tokens_per_s": state["tokens"] / wall,
        "samples_per_s": total_steps * cfg["train"]["batch_size"] * cfg["train"]["grad_accum"] / wall,
        # seconds per optimizer step after the first tenth of the steps (warm-up), KL estimates included
        "steady_step_s": steady_step,
        "peak_memory_mb": peak_memory_mb(),
        "device": str(next(model.parameters()).device),
        "mixed_precision": str(precision),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "final_loss_last10pct_mean": sum(tail) / len(tail) if losses else None,
        "mlflow_run_id": run.run_id,
    }
    # Names every method shares, for the UI's charts and run comparison: final loss and KL, throughput, memory.
    finals = {"final_loss": summary["final_loss"], "final_kl": state["kl"][-1]["kl"] if state["kl"] else None}
    run.log_metrics(
        {k: summary[k] for k in ("wall_time_s", "tokens_per_s", "samples_per_s", "peak_memory_mb")}
        | {k: v for k, v in finals.items() if v is not None}
        | {f"truncation_{k}": v for k, v in (truncation or {}).items()}
    )
    kl_columns = ["step", "kl", "kl_std", "kl_samples", "kl_response_tokens", *cell]
    with io.atomic(out_dir / "kl.csv") as tmp:
        pd.DataFrame(state["kl"], columns=kl_columns[:5]).assign(**cell)[kl_columns].to_csv(tmp, index=False)
    run.log_artifact(out_dir / "kl.csv")
    io.write_text(out_dir / "train.json", json.dumps(summary, indent=2))
    run.log_artifact(out_dir / "train.json")
    card = out_dir / "model" / "README.md"
    io.write_text(card, model_card(cfg, cell, summary))
    run.log_artifact(card)
    checkpoint.remove(ckpt_dir)
    return summary
