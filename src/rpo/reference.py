"""The reference policy: create it (tiny from scratch, or point at a pretrained one) and cache its log-probs.

Reference log-probs are computed once per (model, dataset) so training never holds a reference model.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from rpo import config as config_lib
from rpo import resources
from rpo import modeling, objectives


def init_model(cfg: dict, model_name: str, train_path: str | Path, out_dir: str | Path, eval_path=None) -> None:
    spec = cfg["models"][model_name]
    out_dir = Path(out_dir)
    if spec["source"] == "pretrained":
        modeling.save_pointer(out_dir, spec["path"])
        return
    if spec["source"] == "gguf":
        modeling.convert_gguf(resources.resolve(spec["path"], f"models.{model_name}.path"), spec["gguf_file"], out_dir)
        return
    table = pd.read_parquet(train_path)
    demos = demonstrations(cfg, model_name, table, eval_path)
    texts = pd.concat([table["prompt"], table["response"], demos["prompt"], demos["response"]]).drop_duplicates().tolist()
    tokenizer = modeling.build_tokenizer(texts, spec["tiny"]["vocab_size"])
    model = modeling.build_tiny_model(spec["arch"], tokenizer, spec["tiny"], seed=cfg["seeds"][0])
    info = {"arch": spec["arch"], "parameters": sum(p.numel() for p in model.parameters()), "vocab": len(tokenizer)}
    if len(demos):
        info["pretrain"] = pretrain(cfg, spec, model, tokenizer, demos)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "init.json").write_text(json.dumps(info, indent=2))


def demonstrations(cfg: dict, model_name: str, table: pd.DataFrame, eval_path=None) -> pd.DataFrame:
    """Noisy demonstrations from the synthetic world (each constraint met with probability `skill`), on prompts
    that are neither training nor held-out prompts."""
    import random

    from rpo import synthetic

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
            rows.append({"prompt": prompt, "response": synthetic.sample_response(prompt, rng, rng.uniform(*pcfg["skill"]))})
    return pd.DataFrame(rows)


def pretrain(cfg: dict, spec: dict, model, tokenizer, demos: pd.DataFrame) -> dict:
    """SFT from scratch on the demonstrations: token-level negative log-likelihood of the responses, AdamW."""
    pcfg, tcfg = spec["pretrain"], cfg["train"]
    torch.manual_seed(pcfg["seed"])
    model.to(modeling.device()).train()
    modeling.disable_dropout(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=pcfg["lr"])
    losses = []
    steps = pcfg["epochs"] * len(batch_slices(len(demos), pcfg["batch_size"]))
    bar = tqdm(total=steps, desc=f"pretrain reference on {len(demos)} demonstrations")
    for _ in range(pcfg["epochs"]):
        order = demos.sample(frac=1.0, random_state=int(torch.randint(0, 2**31 - 1, ())))
        for rows in batch_slices(len(order), pcfg["batch_size"]):
            part = order.iloc[rows]
            batch = modeling.encode(tokenizer, spec["arch"], part["prompt"].tolist(), part["response"].tolist(),
                                    tcfg["max_prompt_len"], tcfg["max_response_len"], spec["chat_template"])
            total, n_tokens = modeling.sequence_logprobs(model, batch.to(modeling.device()))
            loss = -total.sum() / n_tokens.sum()
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


def batch_slices(n: int, size: int):
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


@torch.no_grad()
def _score_rows(model, tokenizer, spec, prompts, responses, train_cfg, desc):
    sums, counts = [], []
    for rows in tqdm(batch_slices(len(prompts), train_cfg["batch_size"] * 4), desc=desc):
        batch = modeling.encode(tokenizer, spec["arch"], prompts[rows], responses[rows], train_cfg["max_prompt_len"],
                                train_cfg["max_response_len"], spec["chat_template"])
        total, n_tokens = modeling.sequence_logprobs(model, batch.to(modeling.device()), train_cfg["logprob_chunk_size"])
        sums.append(total.double().cpu())
        counts.append(n_tokens.cpu())
    return torch.cat(sums).numpy(), torch.cat(counts).numpy()


def compute_ref_logprobs(cfg: dict, model_name: str, model_dir: str | Path, train_path: str | Path, out_path: str | Path) -> None:
    """Summed reference log-prob and token count of every training row; with KTO in the config, also of
    each row's mismatched (prompt, other completion) pair, the KL pairs of KTO's reference point."""
    cfg = config_lib.for_model(cfg, model_name)
    spec, train_cfg = cfg["models"][model_name], cfg["train"]
    model, tokenizer = modeling.load(model_dir, spec["arch"])
    model.to(modeling.device()).eval()
    table = pd.read_parquet(train_path)
    prompts, responses = table["prompt"].tolist(), table["response"].tolist()
    ref_sum, n_tokens = _score_rows(model, tokenizer, spec, prompts, responses, train_cfg,
                                    f"reference log-probs {model_name}")
    out = pd.DataFrame({"row": range(len(table)), "prompt_id": table["prompt_id"], "ref_logp_sum": ref_sum, "n_tokens": n_tokens})
    if "kto" in cfg["methods"]:
        partners = objectives.mismatched_partners(table["prompt_id"].to_numpy(), seed=cfg["seeds"][0])
        kl_sum, kl_n = _score_rows(model, tokenizer, spec, prompts, [responses[j] for j in partners], train_cfg,
                                   f"reference log-probs of KL pairs {model_name}")
        out = out.assign(kl_row=partners, ref_kl_logp_sum=kl_sum, kl_n_tokens=kl_n)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(out_path, index=False)


def sample_training_data(cfg: dict, model_name: str, model_dir, prompts_path, out_path) -> dict:
    """The UltraFeedback-shaped training set of the synthetic world: several completions per training prompt sampled
    from this model's reference, each scored by the world's true reward; duplicates and prompts left with fewer than
    `data.min_responses_per_prompt` distinct completions are dropped (counted in the manifest)."""
    import numpy as np

    from rpo import data, generate, synthetic

    scfg, dcfg = cfg["data"]["sample_from_reference"], cfg["data"]
    gcfg = {**cfg["generate"], "do_sample": True, "temperature": scfg["temperature"], "top_k": scfg["top_k"],
            "top_p": scfg["top_p"], "repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
            "max_new_tokens": scfg["max_new_tokens"]}
    generator = generate.TransformersGenerator(model_dir, cfg["models"][model_name], gcfg, cfg["train"]["max_prompt_len"])
    prompts = pd.read_parquet(prompts_path)["prompt"].drop_duplicates().tolist()
    asked = [p for p in prompts for _ in range(scfg["completions"])]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".jsonl.partial")
    rows = generate.generate_rows(generator, asked, [{"prompt": p} for p in asked], partial, gcfg["batch_size"],
                                  scfg["seed"], desc=f"sample {scfg['completions']} completions per prompt")
    frame = pd.DataFrame({"prompt": [r["prompt"] for r in rows], "response": [r["generation"] for r in rows]})
    frame = frame[frame["response"].str.strip() != ""].drop_duplicates()
    counts = frame.groupby("prompt")["response"].transform("size")
    kept = frame[counts >= dcfg["min_responses_per_prompt"]].reset_index(drop=True)
    reward_raw = np.array([synthetic.reward(p, r) for p, r in zip(kept["prompt"], kept["response"])])
    mean, std = float(reward_raw.mean()), float(reward_raw.std()) or 1.0
    table = pd.DataFrame({"row": np.arange(len(kept)), "prompt_id": kept["prompt"].map(data.prompt_id),
                          "prompt": kept["prompt"], "response": kept["response"], "reward_raw": reward_raw,
                          "reward": (reward_raw - mean) / std, "split": "train"})[data.COLUMNS]
    table.to_parquet(data.fresh(out_path), index=False)
    partial.unlink()
    manifest = {"model": model_name, "prompts": len(prompts), "completions_asked": len(asked), "rows": len(table),
                "prompts_kept": int(table["prompt_id"].nunique()), "dropped_duplicates_or_empty": len(asked) - len(frame),
                "dropped_prompts_too_few_completions": len(prompts) - int(table["prompt_id"].nunique()),
                "reward_raw": {"mean": mean, "std": std, "share_10": float((reward_raw == 10).mean())},
                "md5": data.md5(out_path)}
    out_path.with_name("manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
