"""Per-step wall time of the demo's four per-cell steps run directly and through the warm-start server.

Needs a finished `make demo` (results/demo). Outputs go to a temporary folder with its own MLflow store, so the
demo's results are untouched. Each step runs `--repeats` times each way (the warm server is started first, so
its one-off start-up is not counted: it is paid once per pipeline run).

    python benchmarks/warm_start.py [--repeats 3] [--json benchmarks/results/warm_start.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path("results/demo")
CELL = ["--model", "t5-tiny", "--method", "rpo", "--ablation", "default", "--seed", "0"]
RUN = RESULTS / "t5-tiny" / "rpo" / "default" / "seed0"


def steps(out: Path) -> dict[str, list[str]]:
    config = str(RESULTS / "configs" / "ablation_default.yaml")
    model_dir = RESULTS / "t5-tiny"
    return {
        "train": [
            "train",
            "--config",
            config,
            *CELL,
            "--init",
            str(model_dir / "reference"),
            "--train",
            str(model_dir / "data" / "train.parquet"),
            "--base-train",
            str(model_dir / "data" / "train.parquet"),
            "--ref",
            str(model_dir / "reference_logprobs.parquet"),
            "--eval",
            "data/prepared/demo/eval.parquet",
            "--out-dir",
            str(out / "train"),
        ],
        "generate": [
            "generate",
            "--config",
            config,
            *CELL,
            "--model-dir",
            str(RUN / "model"),
            "--eval",
            "data/prepared/demo/eval.parquet",
            "--out",
            str(out / "generations.jsonl"),
        ],
        "score": [
            "score",
            "--config",
            config,
            *CELL,
            "--generations",
            str(RUN / "generations.jsonl"),
            "--out",
            str(out / "scores.json"),
        ],
        "judge": [
            "judge",
            "--config",
            config,
            *CELL,
            "--judge",
            "oracle",
            "--scope",
            "in_domain",
            "--generations",
            f"rpo={RUN / 'generations.jsonl'}",
            f"sft={RESULTS / 't5-tiny' / 'sft' / 'default' / 'seed0' / 'generations.jsonl'}",
            "--out",
            str(out / "judge.json"),
        ],
    }


def timed(argv: list[str], env: dict, out: Path) -> float:
    for leftover in (out / "generations.jsonl", out / "generations.jsonl.partial"):
        leftover.unlink(missing_ok=True)  # generation resumes from what it finds
    start = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "rpo"), *argv], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if not (RUN / "generations.jsonl").exists():
        sys.exit("run `make demo` first: this benchmark reuses its reference, data and generations")
    with tempfile.TemporaryDirectory() as tmp:
        out, runtime = Path(tmp), Path(tmp) / "run"
        runtime.mkdir()
        base = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{out}/mlflow.db",
            "OMP_NUM_THREADS": "1",
            "XDG_RUNTIME_DIR": str(runtime),
            "RPO_WARM_IDLE": "60",
        }
        base.pop("RPO_WARM", None)
        envs = {"direct": base, "warm": {**base, "RPO_WARM": "1"}}
        plan = steps(out)
        timed(plan["judge"], envs["direct"], out)  # create the MLflow store
        timed(plan["judge"], envs["warm"], out)  # start the server
        rows = []
        for name, argv in plan.items():
            times = {way: [timed(argv, env, out) for _ in range(args.repeats)] for way, env in envs.items()}
            direct, warm = statistics.median(times["direct"]), statistics.median(times["warm"])
            rows.append(
                {
                    "step": name,
                    "direct_s": round(direct, 2),
                    "warm_s": round(warm, 2),
                    "saved_s": round(direct - warm, 2),
                    "speedup": round(direct / warm, 1),
                }
            )
    print(f"median of {args.repeats} runs each, one thread per step, {platform.node()}")
    print("| step | direct (s) | warm (s) | saved per job (s) | speed-up |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['direct_s']} | {r['warm_s']} | {r['saved_s']} | {r['speedup']}x |")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"date": time.strftime("%Y-%m-%d"), "repeats": args.repeats, "cpu_count": os.cpu_count(), "rows": rows},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
