"""How the diagnosis's forward passes over the reference's samples scale with the batch (issue 26: making room for
QRPO in the demo). Scores one model's optimum samples (test and training prompts) with its reference, at several
batch sizes, and reports the time and the largest difference from the first batch size's log-probs.

    python benchmarks/score_batch.py results/demo llama-tiny --batch 64 256 512 1024
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from rpo.models import build
from rpo.reference.logprobs import score_sampled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a config's results folder, e.g. results/demo")
    parser.add_argument("model")
    parser.add_argument("--arch", default=None, help="causal or seq2seq (default: from the name: t5 -> seq2seq)")
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    arch = args.arch or ("seq2seq" if "t5" in args.model else "causal")
    folder = Path(args.results) / args.model / "reference"
    rows = []
    for name in ("optimum_samples.jsonl", "optimum_train_samples.jsonl"):
        frame = pd.read_json(folder / name, lines=True).sort_values(["prompt_id", "sample"], kind="stable")
        rows += frame[["prompt_ids", "response_ids"]].to_dict("records")
    model, tokenizer = build.load(folder / "model", arch)
    model.eval()
    first = None
    print(f"{args.model}: {len(rows)} samples, torch threads {torch.get_num_threads()}")
    for batch in args.batch:
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            with torch.no_grad():
                values = score_sampled(model, tokenizer, arch, rows, batch, f"batch {batch}")
            best = min(best, time.perf_counter() - start)
        first = values if first is None else first
        print(f"batch {batch:5d}: {best:6.2f} s   max |diff| {np.abs(values - first).max():.2e}")


if __name__ == "__main__":
    main()
