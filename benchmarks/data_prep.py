"""Data preparation at UltraFeedback scale: 64k prompts x 4 responses, end to end, V_hat for every prompt included.

python benchmarks/data_prep.py [--prompts 64000]     # target: under 60 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import pandas as pd

from rpo import config
from rpo.data import prepare, variants
from rpo.train import objectives


def write_input(path: Path, n_prompts: int) -> None:
    """UltraFeedback's own layout: one record per prompt with four scored completions (prose-length texts)."""
    rng = random.Random(0)
    words = "the of and to in is that for it as with was on be by this are from at or an have not".split()
    with open(path, "w") as handle:
        for i in range(n_prompts):
            prompt = f"Instruction {i}: " + " ".join(rng.choices(words, k=40))
            completions = [
                {
                    "model": f"m{j}",
                    "response": " ".join(rng.choices(words, k=150)),
                    "overall_score": float(rng.randint(1, 10)),
                    "fine-grained_score": rng.uniform(1, 5),
                }
                for j in range(4)
            ]
            handle.write(json.dumps({"source": "bench", "instruction": prompt, "completions": completions}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "ultrafeedback.jsonl"
        write_input(raw, args.prompts)
        cfg = config.resolve(
            {
                "name": "bench",
                "methods": ["rpo"],
                "models": {"m": {"arch": "causal", "source": "tiny"}},
                "data": {
                    "source": "jsonl",
                    "path": str(raw),
                    "layout": "ultrafeedback",
                    "n_eval_prompts": 10_000,
                    "dvc": False,
                },
            }
        )
        start = time.perf_counter()
        manifest = prepare.prepare(cfg, Path(tmp) / "prepared")
        prepared = time.perf_counter()
        train = pd.read_parquet(Path(tmp) / "prepared" / "train.parquet")
        table = objectives.rpo_prepare(train, cfg)
        done = time.perf_counter()
        variants.density_variant(train, 0.5, seed=0)
        density = time.perf_counter()
        variants.noise_variant(train, 0.5, seed=0)
        noise = time.perf_counter()
        size_mb = raw.stat().st_size / 2**20
    print(f"input: {args.prompts:,} prompts x 4 completions, {size_mb:.0f} MB JSONL (UltraFeedback layout)")
    print(
        f"prepared: {manifest['rows']['train']:,} training rows over {manifest['prompts']['train']:,} prompts, "
        f"{manifest['rows']['eval']:,} held-out prompts, {manifest['rejected']['total']} rejected"
    )
    print(f"prepare (read, check, split, standardise, write, md5): {prepared - start:.1f} s")
    print(f"V_hat for all {table['prompt_id'].nunique():,} prompts: {done - prepared:.1f} s")
    print(f"total: {done - start:.1f} s (target < 60 s)")
    print(f"ablation variants: density 0.5 {density - done:.1f} s, noise 0.5 {noise - density:.2f} s")


if __name__ == "__main__":
    main()
