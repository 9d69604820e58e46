"""GPU check: the real pipeline stages on CUDA in bf16, then RPO and SFT training throughput at the ~374M
Llama shape, with and without the chunked log-prob path. One script, so a short GPU lease runs it once.

    python benchmarks/gpu_check.py --out results/gpu_check.json [--big-steps 30]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rpo import config  # noqa: E402
from rpo.data import prepare  # noqa: E402
from rpo.evaluate import generate  # noqa: E402
from rpo.reference import init, logprobs  # noqa: E402
from rpo.train import loop  # noqa: E402


def pipeline_on_gpu(tmp: Path) -> dict:
    """Both architectures, every objective: reference cache, a short training run, generation."""
    cfg = config.resolve(
        {
            "name": "gpu",
            "methods": ["sft", "kto", "dro", "rpo"],
            "models": {
                "llama": {"arch": "causal", "source": "tiny", "tiny": {"hidden_size": 128, "num_layers": 2}},
                "t5": {"arch": "seq2seq", "source": "tiny", "tiny": {"hidden_size": 128, "num_layers": 2}},
            },
            "data": {"synthetic": {"n_prompts": 64, "responses_per_prompt": 4}, "n_eval_prompts": 16, "dvc": False},
            "train": {
                "epochs": 2,
                "batch_size": 16,
                "lr": 2e-4,
                "warmup_steps": 2,
                "kl_every": 4,
                "kl_prompts": 4,
                "checkpoint_every": 4,
                "max_prompt_len": 96,
                "max_response_len": 48,
            },
            "generate": {"max_new_tokens": 24, "batch_size": 8},
        }
    )
    prepare.prepare(cfg, tmp / "data")
    out = {}
    for model in cfg["models"]:
        init.init_model(cfg, model, tmp / "data/train.parquet", tmp / model / "ref")
        logprobs.compute_ref_logprobs(
            cfg, model, tmp / model / "ref", tmp / "data/train.parquet", tmp / model / "ref.parquet"
        )
        for method in cfg["methods"]:
            cell = {"model": model, "method": method, "ablation": "default", "seed": 0}
            run_dir = tmp / model / method
            summary = loop.train(
                cfg,
                cell,
                tmp / model / "ref",
                tmp / "data/train.parquet",
                tmp / model / "ref.parquet",
                run_dir,
                eval_path=tmp / "data/eval.parquet",
            )
            generate.generate(cfg, cell, run_dir / "model", tmp / "data/eval.parquet", run_dir / "generations.jsonl")
            n_gen = len((run_dir / "generations.jsonl").read_text().splitlines())
            out[f"{model}/{method}"] = {
                k: summary.get(k)
                for k in ("steps", "first_loss", "final_loss", "tokens_per_s", "peak_memory_mb", "mixed_precision")
            }
            out[f"{model}/{method}"]["generations"] = n_gen
            assert math.isfinite(summary["final_loss"]) and n_gen == 16, (model, method, summary)
            print(f"{model}/{method}: {out[f'{model}/{method}']}", flush=True)
    return out


def throughput(tmp: Path, steps: int) -> list[dict]:
    import train_throughput as bench

    rows = []
    for chunk in (0, 4096):
        args = argparse.Namespace(
            steps=steps, batch=16, hidden=1024, layers=24, heads=16, mlp=2816, vocab=32000, chunk=chunk
        )
        folder = tmp / f"big{chunk}"
        folder.mkdir()
        cfg, train_path = bench.build(folder, args)
        logprobs.compute_ref_logprobs(cfg, "llama", folder / "ref", train_path, folder / "ref.parquet")
        n_params = json.loads((folder / "ref" / "init.json").read_text())["parameters"]
        for method in ("sft", "rpo"):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            row = bench.ours(cfg, folder, train_path, method) | {"logprob_chunk_size": chunk, "parameters": n_params}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--big-steps", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # no store here: runs are recorded offline
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    }
    print(report, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report["pipeline"] = pipeline_on_gpu(Path(tmp))
        report["pipeline_s"] = time.perf_counter() - start
        Path(args.out).write_text(json.dumps(report, indent=2))
        start = time.perf_counter()
        report["throughput"] = throughput(Path(tmp), args.big_steps)
        report["throughput_s"] = time.perf_counter() - start
    Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
