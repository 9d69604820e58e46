"""Batched, seeded generation on the held-out prompts, written incrementally so a rerun continues."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from rpo import modeling, tracking
from rpo.reference import batch_slices


def generation_kwargs(gcfg: dict, tokenizer) -> dict:
    kwargs = dict(max_new_tokens=gcfg["max_new_tokens"], do_sample=gcfg["do_sample"],
                  repetition_penalty=gcfg["repetition_penalty"], no_repeat_ngram_size=gcfg["no_repeat_ngram_size"],
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if gcfg["do_sample"]:
        kwargs.update(temperature=gcfg["temperature"], top_k=gcfg["top_k"], top_p=gcfg["top_p"])
    return kwargs


def _done_rows(partial: Path) -> list[dict]:
    if not partial.exists():
        return []
    rows = []
    for line in partial.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: regenerate from there
            break
    return rows


@torch.no_grad()
def generate(cfg: dict, cell: dict, model_dir, eval_path, out_path) -> None:
    spec, gcfg = cfg["models"][cell["model"]], cfg["generate"]
    model, tokenizer = modeling.load(model_dir, spec["arch"])
    model.to(modeling.device()).eval()
    table = pd.read_parquet(eval_path)
    out_path = Path(out_path)
    partial = out_path.with_name(out_path.name + ".partial")
    done = _done_rows(partial)
    done = done[: len(done) // gcfg["batch_size"] * gcfg["batch_size"]]  # whole batches only
    slices = batch_slices(len(table), gcfg["batch_size"])
    kwargs = generation_kwargs(gcfg, tokenizer)
    from rpo.data import md5

    with tracking.run(cfg, "generate", out_path.parent, cell, params={"generate": gcfg}, tags={"eval_md5": md5(eval_path)}), \
            open(partial, "w") as sink:
        for row in done:  # rewrite the complete rows only, dropping a cut-off tail
            sink.write(json.dumps(row) + "\n")
        for index, rows in enumerate(tqdm(slices, desc=f"generate {cell['model']}/{cell['method']}")):
            if rows.stop <= len(done):
                continue
            part = table.iloc[rows]
            input_ids, attention_mask = modeling.encode_prompts(tokenizer, spec["arch"], part["prompt"].tolist(),
                                                               cfg["train"]["max_prompt_len"], spec["chat_template"])
            torch.manual_seed(cell["seed"] * 1_000_003 + index)  # per batch, so a resumed run matches
            output = model.generate(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device),
                                    **kwargs).cpu()
            if spec["arch"] == "causal":
                output = output[:, input_ids.shape[1]:]
            texts = tokenizer.batch_decode(output, skip_special_tokens=True)
            for (_, item), text in zip(part.iterrows(), texts):
                sink.write(json.dumps({"prompt_id": item["prompt_id"], "prompt": item["prompt"],
                                       "reference": item["response"], "generation": text.strip()}) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
    partial.replace(out_path)
