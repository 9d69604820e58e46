"""Warm start on a GPU: steps forked from the warm server initialise CUDA themselves (the server only imported
torch), train in bf16 and generate like a directly started step. Also runs on CPU.

    PYTHONPATH=src python benchmarks/warm_gpu_check.py --out warm_gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CONFIG = {
    "name": "warmgpu",
    "methods": ["rpo"],
    "seeds": [0],
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
        "checkpoint_every": 0,
        "max_prompt_len": 96,
        "max_response_len": 48,
    },
    "generate": {"max_new_tokens": 24, "batch_size": 8, "do_sample": False},
}


def rpo(args: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rpo", *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(
            f"rpo {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="warm_gpu_check.json")
    args = parser.parse_args()
    import torch

    report = {
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "run").mkdir()
        cfg = tmp / "c.yaml"
        cfg.write_text(yaml.safe_dump(CONFIG))
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:9"),
            "XDG_RUNTIME_DIR": str(tmp / "run"),
            "RPO_WARM_IDLE": "30",
        }
        env.pop("RPO_WARM", None)
        envs = {"direct": env, "warm": {**env, "RPO_WARM": "1"}}
        rpo(["prepare-data", "--config", str(cfg), "--out-dir", str(tmp / "data")], env)
        train_table, eval_table = str(tmp / "data" / "train.parquet"), str(tmp / "data" / "eval.parquet")
        rpo(["config", "--config", str(cfg)], envs["warm"])  # start the server
        for model in CONFIG["models"]:
            ref = tmp / model / "ref"
            rpo(
                ["init-model", "--config", str(cfg), "--model", model, "--train", train_table, "--out-dir", str(ref)],
                env,
            )
            rpo(
                [
                    "ref-logprobs",
                    "--config",
                    str(cfg),
                    "--model",
                    model,
                    "--model-dir",
                    str(ref),
                    "--train",
                    train_table,
                    "--out",
                    str(tmp / model / "ref.parquet"),
                ],
                env,
            )
            cell = ["--model", model, "--method", "rpo", "--ablation", "default", "--seed", "0"]
            row = {}
            for way, way_env in envs.items():
                run = tmp / model / way
                row[f"train_{way}_s"] = rpo(
                    [
                        "train",
                        "--config",
                        str(cfg),
                        *cell,
                        "--init",
                        str(ref),
                        "--train",
                        train_table,
                        "--ref",
                        str(tmp / model / "ref.parquet"),
                        "--eval",
                        eval_table,
                        "--out-dir",
                        str(run),
                    ],
                    way_env,
                )
                # both ways generate from the directly trained model, so generations compare step against step
                row[f"generate_{way}_s"] = rpo(
                    [
                        "generate",
                        "--config",
                        str(cfg),
                        *cell,
                        "--model-dir",
                        str(tmp / model / "direct" / "model"),
                        "--eval",
                        eval_table,
                        "--out",
                        str(run / "generations.jsonl"),
                    ],
                    way_env,
                )
                summary = json.loads((run / "train.json").read_text())
                row[f"{way}_final_loss"] = summary["final_loss"]
                row[f"{way}_mixed_precision"] = summary.get("mixed_precision")
                assert math.isfinite(summary["final_loss"]), (model, way, summary)
            row["same_generations"] = (tmp / model / "direct" / "generations.jsonl").read_text() == (
                tmp / model / "warm" / "generations.jsonl"
            ).read_text()
            row["loss_difference"] = abs(row["direct_final_loss"] - row["warm_final_loss"])
            report["models"][model] = row
            print(model, json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
