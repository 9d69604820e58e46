"""Generate for evaluation: the held-out prompts, and the out-of-distribution benchmarks.

In-domain: the held-out prompts of the training data. Out of distribution: the benchmarks of `ood.benchmarks`,
MT-Bench's second turn generated after the first, with the model's own first answer in the conversation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rpo import io, tracking
from rpo.data.prepare import split_of
from rpo.evaluate import ood
from rpo.io import md5
from rpo.models.generation import generate_rows, make_generator, plain_sampling, prompts_per_batch


def generate(cfg: dict, cell: dict, model_dir, eval_path, out_path, samples_path=None) -> None:
    """The configured decoding (greedy in the shipped configs) once per held-out prompt into `out_path`; and
    `generate.samples_per_prompt` plain samples (temperature 1, no top-k/top-p: pi_theta itself) per prompt into
    `samples_path` (empty when that is 0)."""
    gcfg = cfg["generate"]
    table = pd.read_parquet(eval_path)
    out_path = Path(out_path)
    generator = make_generator(cfg, cell["model"], model_dir)
    meta = [
        {
            "prompt_id": r.prompt_id,
            "prompt": r.prompt,
            "reference": r.response,
            "split": split_of(getattr(r, "split", None)),
        }
        for r in table.itertuples()
    ]
    prompts, k = table["prompt"].tolist(), gcfg["samples_per_prompt"]
    name = f"{cell['model']}/{cell['method']}"
    eval_md5 = md5(eval_path)
    with tracking.run(
        cfg, "generate", out_path.parent, cell, params={"generate": gcfg}, tags={"eval_md5": eval_md5}
    ) as run:
        run.log_input(eval_path, "evaluation", eval_md5)
        partial = out_path.with_name(out_path.name + ".partial")
        rows = generate_rows(
            generator, prompts, meta, partial, gcfg["batch_size"], cell["seed"], desc=f"generate {name}"
        )
        if samples_path is not None:
            generator.configure(plain_sampling(gcfg, gcfg["max_new_tokens"]))
            samples_partial = Path(samples_path).with_name(Path(samples_path).name + ".partial")
            samples = generate_rows(
                generator,
                prompts,
                [m | {"sample": j} for m in meta for j in range(k)],
                samples_partial,
                prompts_per_batch(gcfg, k),
                cell["seed"],
                pass_index=1,
                desc=f"sample {k} per prompt {name}",
                per_prompt=k,
            )
            io.write_jsonl(samples_path, samples)
            samples_partial.unlink()
    io.write_jsonl(out_path, rows)
    partial.unlink()


def generate_ood(cfg: dict, cell: dict, model_dir, out_path) -> None:
    """Every OOD benchmark's questions; multi-turn questions get each later turn after the model's own answers."""
    out_path = Path(out_path)
    generator = make_generator(cfg, cell["model"], model_dir)
    benchmarks = {name: ood.load(name, spec) for name, spec in cfg["ood"]["benchmarks"].items()}
    batch_size = cfg["generate"]["batch_size"]
    rows_by_turn = []
    with tracking.run(
        cfg, "generate_ood", out_path.parent, cell, params={"generate": cfg["generate"], "ood": cfg["ood"]}
    ):
        max_turns = max((len(q["turns"]) for qs in benchmarks.values() for q in qs), default=0)
        history = {}  # (benchmark, id) -> conversation so far
        for turn in range(max_turns):
            todo = [(name, q) for name, qs in benchmarks.items() for q in qs if len(q["turns"]) > turn]
            prompts, meta = [], []
            for name, q in todo:
                conversation = history.get((name, q["id"]), []) + [{"role": "user", "content": q["turns"][turn]}]
                prompts.append(conversation)
                extra = {k: q[k] for k in ("instruction_id_list", "kwargs", "answer") if k in q}
                meta.append({"benchmark": name, "id": q["id"], "turn": turn, "conversation": conversation} | extra)
            partial = out_path.with_name(f"{out_path.name}.turn{turn}.partial")
            rows = generate_rows(
                generator,
                prompts,
                meta,
                partial,
                batch_size,
                cell["seed"],
                pass_index=turn + 1,
                desc=f"ood turn {turn + 1} {cell['model']}/{cell['method']}",
            )
            for row in rows:
                history[(row["benchmark"], row["id"])] = row["conversation"] + [
                    {"role": "assistant", "content": row["generation"]}
                ]
            rows_by_turn.append((partial, rows))
    io.write_jsonl(out_path, [row for _, rows in rows_by_turn for row in rows])
    for partial, _ in rows_by_turn:
        partial.unlink()
