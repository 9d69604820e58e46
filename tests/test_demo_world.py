"""The embedded default's world: references pretrained by SFT on noisy demonstrations, training sets sampled from
each reference and scored by the true reward, per-ablation seeds."""

import json

import numpy as np
import pandas as pd
from conftest import REPO, snakemake, write_config
from test_workflow import job_counts

from rpo import config
from rpo.data import prepare, synthetic
from rpo.reference import init, sample


def demo_config(micro_config):
    micro_config["models"]["llama"]["pretrain"] = {"demonstrations": 120, "epochs": 2, "batch_size": 16, "lr": 3e-3}
    micro_config["data"]["sample_from_reference"] = {"completions": 3, "max_new_tokens": 16}
    micro_config["ablations"] = {
        "default": {},
        "beta5": {"methods": ["rpo"], "seeds": [0], "objective": {"beta": 5.0}},
        "noise0.5": {"methods": ["rpo"], "seeds": [0], "data": {"noise": 0.5}},
    }
    micro_config["seeds"] = [0, 1]
    return micro_config


def test_pretrained_reference_learns_and_its_samples_are_scored_by_the_true_reward(workdir, micro_config):
    cfg = config.resolve(demo_config(micro_config))
    prepare.prepare(cfg, workdir / "data")
    init.init_model(cfg, "llama", workdir / "data/train.parquet", workdir / "ref", workdir / "data/eval.parquet")
    info = json.loads((workdir / "ref/init.json").read_text())["pretrain"]
    assert info["demonstrations"] == 120 and info["final_nll"] < info["first_nll"] - 1.0

    demos = init.demonstrations(
        cfg, "llama", pd.read_parquet(workdir / "data/train.parquet"), workdir / "data/eval.parquet"
    )
    taken = set(pd.read_parquet(workdir / "data/train.parquet")["prompt"]) | set(
        pd.read_parquet(workdir / "data/eval.parquet")["prompt"]
    )
    assert len(demos) == 120 and not set(demos["prompt"]) & taken

    manifest = sample.sample_training_data(
        cfg, "llama", workdir / "ref", workdir / "data/train.parquet", workdir / "sampled/train.parquet"
    )
    table = pd.read_parquet(workdir / "sampled/train.parquet")
    assert list(table.columns) == prepare.COLUMNS and len(table) == manifest["rows"] > 0
    assert set(table["prompt"]) <= set(pd.read_parquet(workdir / "data/train.parquet")["prompt"])
    assert table.groupby("prompt_id").size().min() >= 2 and not table.duplicated(["prompt", "response"]).any()
    assert np.allclose(
        table["reward_raw"], [synthetic.reward(p, r) for p, r in zip(table["prompt"], table["response"])]
    )
    assert abs(table["reward"].mean()) < 1e-9 and table["row"].tolist() == list(range(len(table)))


def test_ablations_can_run_fewer_seeds_and_sampled_data_is_per_model(tmp_path, micro_config):
    cfg = config.resolve(demo_config(micro_config))
    cells = config.runs(cfg)
    assert len(cells) == 2 * (4 * 2 + 1 + 1)  # 2 models x (4 methods x 2 seeds + 2 ablations x 1 seed)
    path = write_config(tmp_path / "micro.yaml", demo_config(micro_config))
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(path))
    counts = job_counts(result.stdout)
    assert counts["sample_training_data"] == 2 and counts["data_variant"] == 2  # one per model's own table
    assert "data/prepared/micro/train_noise" not in result.stdout
    assert "--train results/micro/llama/data/train_noise0.5.parquet" in result.stdout
    assert (
        "--train results/micro/t5/data/train.parquet --out results/micro/t5/reference_logprobs.parquet" in result.stdout
    )


def test_smollm2_gguf_converts_once_to_safetensors_and_generates(tmp_path):
    from rpo.models import build, generation

    cfg = config.load(REPO / "config" / "smollm2.yaml")
    init.init_model(cfg, "smollm2-135m", None, tmp_path / "ref")
    assert (tmp_path / "ref" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "ref" / "config.json").read_text())
    assert "quantization_config" not in saved
    assert json.loads((tmp_path / "ref" / "init.json").read_text())["parameters"] > 100_000_000
    gcfg = {**cfg["generate"], "max_new_tokens": 12}
    generator = generation.TransformersGenerator(tmp_path / "ref", cfg["models"]["smollm2-135m"], gcfg, 128)
    texts = generator(["Write about cats. Use at most 8 words."], seed=0)
    assert texts[0].strip() and "<|im_start|>" not in texts[0]
    model, tokenizer = build.load(tmp_path / "ref", "causal")
    assert tokenizer.chat_template and model.config.model_type == "llama"
