"""Create the reference policy: a tiny model built from scratch (and pretrained by SFT on noisy demonstrations of
the synthetic world), a GGUF checkpoint converted once, or a pointer to a pretrained model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from rpo import io, resources
from rpo.data import synthetic
from rpo.models import batching, build, logprobs
from rpo.train import objectives


def init_model(cfg: dict, model_name: str, train_path: str | Path, out_dir: str | Path, eval_path=None) -> None:
    spec = cfg["models"][model_name]
    out_dir = Path(out_dir)
    if spec["source"] == "pretrained":
        build.save_pointer(out_dir, spec["path"])
        return
    if spec["source"] == "gguf":
        build.convert_gguf(resources.resolve(spec["path"], f"models.{model_name}.path"), spec["gguf_file"], out_dir)
        return
    table = pd.read_parquet(train_path)
    demos = demonstrations(cfg, model_name, table, eval_path)
    texts = (
        pd.concat([table["prompt"], table["response"], demos["prompt"], demos["response"]]).drop_duplicates().tolist()
    )
    tokenizer = build.build_tokenizer(texts, spec["tiny"]["vocab_size"])
    model = build.build_tiny_model(spec["arch"], tokenizer, spec["tiny"], seed=cfg["seeds"][0])
    info = {"arch": spec["arch"], "parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer)}
    if len(demos):
        info["pretrain"] = pretrain(cfg, spec, model, tokenizer, demos)
    with io.atomic(out_dir) as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / "init.json").write_text(json.dumps(info, indent=2))


def demonstrations(cfg: dict, model_name: str, table: pd.DataFrame, eval_path=None) -> pd.DataFrame:
    """Noisy demonstrations from the synthetic world (each constraint met with probability `skill`), on prompts
    that are neither training nor held-out prompts."""
    pcfg = cfg["models"][model_name]["pretrain"]
    if not pcfg["demonstrations"]:
        return pd.DataFrame({"prompt": [], "response": []})
    taken = set(table["prompt"]) | (set(pd.read_parquet(eval_path)["prompt"]) if eval_path else set())
    rng = random.Random(pcfg["seed"])
    rows = []
    for _ in range(100 * pcfg["demonstrations"]):
        if len(rows) == pcfg["demonstrations"]:
            break
        prompt = synthetic.make_prompt(rng)
        if prompt not in taken:
            rows.append(
                {"prompt": prompt, "response": synthetic.sample_response(prompt, rng, rng.uniform(*pcfg["skill"]))}
            )
    return pd.DataFrame(rows)


def pretrain(cfg: dict, spec: dict, model, tokenizer, demos: pd.DataFrame) -> dict:
    """SFT from scratch on the demonstrations: the registry's SFT objective (token-level negative log-likelihood of
    the responses), AdamW."""
    pcfg, tcfg = spec["pretrain"], cfg["train"]
    sft = objectives.get("sft")
    torch.manual_seed(pcfg["seed"])
    model.to(build.device()).train()
    build.disable_dropout(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=pcfg["lr"])
    losses = []
    steps = pcfg["epochs"] * len(batching.batch_slices(len(demos), pcfg["batch_size"]))
    bar = tqdm(total=steps, desc=f"pretrain reference on {len(demos)} demonstrations")
    for _ in range(pcfg["epochs"]):
        order = demos.sample(frac=1.0, random_state=int(torch.randint(0, 2**31 - 1, ())))
        for rows in batching.batch_slices(len(order), pcfg["batch_size"]):
            part = order.iloc[rows]
            batch = batching.encode(
                tokenizer,
                spec["arch"],
                part["prompt"].tolist(),
                part["response"].tolist(),
                tcfg["max_prompt_len"],
                tcfg["max_response_len"],
                spec["chat_template"],
            )
            total, n_tokens = logprobs.sequence_logprobs(model, batch.to(build.device()))
            loss, _ = sft.loss({"token_logp_sum": total, "n_tokens": n_tokens}, cfg)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(nll=f"{losses[-1]:.3f}")
    bar.close()
    model.cpu().eval()
    return {"demonstrations": len(demos), "steps": len(losses), "first_nll": losses[0], "final_nll": losses[-1]}
