"""Training throughput: SFT, RPO (cached reference), DRO and KTO here, against TRL's KTOTrainer with a live
reference and with precompute_ref_log_probs=True. Same model, same data, same batch size, one run.

    pip install -e ".[bench]"
    python benchmarks/train_throughput.py [--steps 80] [--hidden 128] [--layers 4] [--heads 4] [--mlp 0] [--vocab 2000]
    # the issue's H100 shape (vocabulary capped by what BPE can learn from the synthetic data):
    python benchmarks/train_throughput.py --hidden 1024 --layers 24 --heads 16 --mlp 2816 --vocab 32000 --chunk 4096

CPU targets: RPO step time within 5% of SFT's; RPO samples/s at least 2x TRL KTOTrainer's default.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from rpo import config
from rpo.data import prepare
from rpo.models import build as models_build
from rpo.reference import init
from rpo.reference import logprobs as ref_logprobs
from rpo.train import loop


def build(tmp: Path, args) -> tuple[dict, Path]:
    n_prompts = args.steps * args.batch // 4 + 8
    cfg = config.resolve(
        {
            "name": "bench",
            "methods": ["sft", "rpo", "dro", "kto"],
            "models": {
                "llama": {
                    "arch": "causal",
                    "source": "tiny",
                    "tiny": {
                        "hidden_size": args.hidden,
                        "num_layers": args.layers,
                        "num_heads": args.heads,
                        "intermediate_size": args.mlp or 4 * args.hidden,
                        "vocab_size": args.vocab,
                    },
                }
            },
            "data": {
                "synthetic": {"n_prompts": n_prompts, "responses_per_prompt": 4},
                "n_eval_prompts": 4,
                "eval_fallback": "best",
                "dvc": False,
            },
            "train": {
                "batch_size": args.batch,
                "epochs": 1,
                "lr": 1e-5,
                "warmup_steps": 0,
                "max_prompt_len": 128,
                "max_response_len": 256,
                "log_every": 5,
                "checkpoint_every": 0,
                "kl_every": 0,
                "logprob_chunk_size": args.chunk,
                "group_by_length": args.group_by_length,
            },
            # SFT on every row (not each prompt's best only): every trainer takes the same number of steps
            "objective": {"beta": 0.1, "sft": {"best_only": False}},
        }
    )
    prepare.prepare(cfg, tmp / "data")
    init.init_model(cfg, "llama", tmp / "data" / "train.parquet", tmp / "ref")
    return cfg, tmp / "data" / "train.parquet"


def reference_cache(cfg, tmp: Path, train_path: Path, args) -> dict:
    start = time.perf_counter()
    ref_logprobs.compute_ref_logprobs(cfg, "llama", tmp / "ref", train_path, tmp / "ref.parquet")
    return {
        "trainer": "rpo-pipeline reference cache (once per model and dataset)",
        "steps": None,
        "samples_per_s": pd.read_parquet(train_path).shape[0] / (time.perf_counter() - start),
        "tokens_per_s": None,
        "peak_memory_mb": loop.peak_memory_mb(),
        "step_ms": None,
        "steady_step_ms": None,
    }


def steady(summary_step_s) -> float | None:
    return None if summary_step_s is None else 1000 * summary_step_s


def bare(cfg, tmp: Path, train_path: Path) -> dict:
    """The ceiling: forward + backward + AdamW over the same model, rows, batches and order as the RPO run, with the
    RPO loss on precomputed targets; no accelerate, no logging, no scheduler, batches padded ahead of time."""
    from rpo.models import batching
    from rpo.models import logprobs as lp
    from rpo.train import objectives
    from rpo.train.inputs import training_table

    tcfg = cfg["train"]
    loop.set_seed(0)
    table = training_table(cfg, objectives.get("rpo"), train_path, tmp / "ref.parquet")
    model, tokenizer = models_build.load(tmp / "ref", "causal")
    models_build.disable_dropout(model)
    model.train()
    ids = batching.tokenize(
        tokenizer,
        table["prompt"].tolist(),
        table["response"].tolist(),
        tcfg["max_prompt_len"],
        tcfg["max_response_len"],
    )
    pairs = batching.PaddedTable(tokenizer, "causal", ids)
    target = torch.tensor(
        ((table["reward"] - table["v_hat"]) / cfg["objective"]["beta"]).to_numpy(), dtype=torch.float32
    )
    ref = torch.tensor(table["ref_logp"].to_numpy(), dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg["lr"], weight_decay=0.0)
    steps = len(table) // tcfg["batch_size"]
    lengths = pairs.lengths if tcfg["group_by_length"] else None
    order = loop.epoch_order(len(table), 0, 0, lengths, tcfg["batch_size"])
    clock = []
    start = time.perf_counter()
    for step in range(steps):
        rows = order[step * tcfg["batch_size"] : (step + 1) * tcfg["batch_size"]]
        batch = pairs.batch(rows)
        log_ratio = lp.score(model, batch).sum_logp - ref[rows]
        loss = 0.5 * ((log_ratio - target[rows]) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % tcfg["log_every"] == 0 or step + 1 == steps:
            loss.item()
            clock.append((step + 1, time.perf_counter()))
    wall = time.perf_counter() - start
    return {
        "trainer": "bare loop (forward + backward + AdamW, the ceiling)",
        "steps": steps,
        "samples_per_s": steps * tcfg["batch_size"] / wall,
        "tokens_per_s": None,
        "peak_memory_mb": loop.peak_memory_mb(),
        "step_ms": 1000 * wall / steps,
        "steady_step_ms": steady(loop.steady_step_s(clock, steps)),
    }


def ours(cfg, tmp: Path, train_path: Path, method: str) -> dict:
    summary = loop.train(
        cfg,
        {"model": "llama", "method": method, "ablation": "default", "seed": 0},
        tmp / "ref",
        train_path,
        tmp / "ref.parquet",
        tmp / f"run-{method}",
    )
    return {
        "trainer": f"rpo-pipeline {method.upper()}" + (" (cached reference)" if method != "sft" else ""),
        "steps": summary["steps"],
        "samples_per_s": summary["samples_per_s"],
        "tokens_per_s": summary["tokens_per_s"],
        "peak_memory_mb": summary["peak_memory_mb"],
        "step_ms": 1000 * summary["wall_time_s"] / summary["steps"],
        "steady_step_ms": steady(summary["steady_step_s"]),
    }


def trl_kto(cfg, tmp: Path, train_path: Path, args, precompute: bool) -> dict:
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    table = pd.read_parquet(train_path)
    dataset = Dataset.from_dict(
        {
            "prompt": table["prompt"].tolist(),
            "completion": table["response"].tolist(),
            "label": (table["reward"] >= 0).tolist(),
        }
    )
    model, tokenizer = models_build.load(tmp / "ref", "causal")
    ref_model, _ = models_build.load(tmp / "ref", "causal")
    kto_args = KTOConfig(
        output_dir=str(tmp / f"trl-{precompute}"),
        per_device_train_batch_size=args.batch,
        max_steps=cfg["train"]["epochs"] * (len(table) // args.batch),
        learning_rate=1e-5,
        beta=0.1,
        max_length=cfg["train"]["max_prompt_len"] + cfg["train"]["max_response_len"],
        precompute_ref_log_probs=precompute,
        report_to=[],
        logging_steps=10_000,
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = KTOTrainer(
        model=model, ref_model=ref_model, args=kto_args, train_dataset=dataset, processing_class=tokenizer
    )
    metrics = trainer.train().metrics
    return {
        "trainer": f"trl.KTOTrainer ({'precompute_ref_log_probs=True' if precompute else 'live reference'})",
        "steps": trainer.state.global_step,
        "samples_per_s": metrics["train_samples_per_second"],
        "tokens_per_s": None,
        "peak_memory_mb": loop.peak_memory_mb(),
        "step_ms": 1000 * metrics["train_runtime"] / trainer.state.global_step,
        "steady_step_ms": None,
    }


TRAINERS = ["cache", "bare", "sft", "rpo", "dro", "kto", "trl-live", "trl-precompute"]


def worker(name: str, tmp: Path, args) -> dict:
    """One trainer in a process of its own: a fair start and its own peak memory."""
    cfg = json.loads((tmp / "cfg.json").read_text())
    train_path = tmp / "data" / "train.parquet"
    if name == "cache":
        return reference_cache(cfg, tmp, train_path, args)
    if name == "bare":
        return bare(cfg, tmp, train_path)
    if name.startswith("trl"):
        return trl_kto(cfg, tmp, train_path, args, precompute=name == "trl-precompute")
    return ours(cfg, tmp, train_path, name)


SHAPES = {
    # the H100 shape: a 374M-parameter Llama (hidden 1024, 24 layers, MLP 2816); the BPE learnt from the
    # synthetic data caps the vocabulary below 32k, and the synthetic sequences are short
    "paper-374m": {"hidden": 1024, "layers": 24, "heads": 16, "mlp": 2816, "vocab": 32000, "chunk": 4096},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--mlp", type=int, default=0, help="MLP width (default 4 x hidden)")
    parser.add_argument("--vocab", type=int, default=2000, help="BPE vocabulary trained on the synthetic data")
    parser.add_argument("--chunk", type=int, default=0, help="train.logprob_chunk_size")
    parser.add_argument("--group-by-length", action="store_true", help="train.group_by_length")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a named model shape (overrides the size flags)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per trainer; the fastest counts (noisy machines)")
    parser.add_argument("--only", nargs="+", choices=TRAINERS, default=TRAINERS, help="trainers to run (cache first)")
    parser.add_argument("--worker", choices=TRAINERS, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name, value in SHAPES.get(args.shape, {}).items():
        setattr(args, name, value)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.gettempdir()}/rpo-bench-mlflow.db")
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, Path(args.tmp), args)))
        return
    import subprocess
    import sys

    trainers = ["cache", *(t for t in args.only if t != "cache")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg, _ = build(tmp, args)
        (tmp / "cfg.json").write_text(json.dumps(cfg))
        for repeat in range(args.repeats):  # interleaved, so drift in machine load hits every trainer alike
            for name in trainers if repeat == 0 else trainers[1:]:
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", name, "--tmp", str(tmp), "--batch", str(args.batch)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append(
                    json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
                )
                steady_ms = rows[-1]["steady_step_ms"]
                print(
                    f"{name} (run {repeat + 1}): {rows[-1]['samples_per_s']:.1f} samples/s"
                    + (f", steady step {steady_ms:.1f} ms" if steady_ms else ""),
                    flush=True,
                )
    best = []
    for name in dict.fromkeys(r["trainer"] for r in rows):
        runs = [r for r in rows if r["trainer"] == name]
        row = max(runs, key=lambda r: r["samples_per_s"])
        steadies = [r["steady_step_ms"] for r in runs if r["steady_step_ms"]]
        best.append(row | {"steady_step_ms": min(steadies) if steadies else None})
    table = pd.DataFrame(best)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"\n{device}, Llama-style model (hidden {args.hidden}, {args.layers} layers), batch {args.batch}, "
        f"best of {args.repeats} runs each\n"
    )
    print(table.to_markdown(index=False, floatfmt=".1f"))
    by = {r["trainer"].split(" (")[0]: r for r in best}
    rpo, sft, ceiling = by.get("rpo-pipeline RPO"), by.get("rpo-pipeline SFT"), by.get("bare loop")
    if rpo and ceiling:
        print(
            f"\nRPO throughput / bare loop (steady-state step times): "
            f"{ceiling['steady_step_ms'] / rpo['steady_step_ms']:.3f} (target >= 0.90)"
        )
    if rpo and sft:
        print(
            f"RPO step time / SFT step time (steady state, equal steps): "
            f"{rpo['steady_step_ms'] / sft['steady_step_ms']:.3f} (target <= 1.05)"
        )
    trl_live = next((r for r in best if r["trainer"] == "trl.KTOTrainer (live reference)"), None)
    if rpo and trl_live:
        print(
            f"RPO samples/s / TRL KTOTrainer (live reference): {rpo['samples_per_s'] / trl_live['samples_per_s']:.2f}"
        )
    print(json.dumps(best))


if __name__ == "__main__":
    main()
