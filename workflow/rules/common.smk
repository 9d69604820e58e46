import json
import re

from snakemake.utils import validate

from rpo import config as rpo_config

validate(config, "../schemas/config.schema.yaml")
CFG = rpo_config.resolve(config, source="snakemake config")
RESULTS = f"results/{CFG['name']}"
RUNS = rpo_config.runs(CFG)
ABLATION_CFG = {name: rpo_config.for_ablation(CFG, name) for name in CFG["ablations"]}
RUN_DIR = f"{RESULTS}/{{model}}/{{method}}/{{ablation}}/seed{{seed}}"
CONDA_ENV = "../../environment.yml"
CONFIG_FILE = f"{RESULTS}/config.yaml"
DATA = f"data/prepared/{CFG['name']}"
JUDGES = list(CFG["judge"]["judges"])
JUDGED_METHODS = ["rpo", *(m for m in CFG["judge"]["baselines"] if m in CFG["methods"])] if "rpo" in CFG["methods"] else []


wildcard_constraints:
    model="|".join(map(re.escape, CFG["models"])),
    method="|".join(map(re.escape, CFG["methods"])),
    ablation="|".join(map(re.escape, CFG["ablations"])),
    seed=r"\d+",
    judge="|".join(map(re.escape, JUDGES)) or "no-judge-configured",


def run_paths(filename, ablation="default"):
    """One path per training cell of an ablation (None: of every ablation)."""
    return [
        f"{RUN_DIR.format(**cell)}/{filename}"
        for cell in RUNS
        if ablation in (None, cell["ablation"])
    ]


def training_table(wildcards):
    """The full training table, or the ablation's density/noise variant of it."""
    name = rpo_config.training_table_name(ABLATION_CFG[wildcards.ablation])
    return f"{DATA}/{name}.parquet"


def data_tables():
    """Every table the config's runs train or evaluate on: what the data version covers."""
    names = {rpo_config.training_table_name(cfg) for cfg in ABLATION_CFG.values()}
    return [f"{DATA}/{name}.parquet" for name in sorted(names | {"train", "eval"})]


def judge_paths():
    """One win-rate file per (model, judge, seed) when RPO and judges are configured."""
    if not JUDGED_METHODS or len(JUDGED_METHODS) < 2:
        return []
    return [f"{RESULTS}/{model}/judge/{judge}/seed{seed}/winrates.json"
            for model in CFG["models"] for judge in JUDGES for seed in CFG["seeds"]]


def ood_paths(filename):
    """OOD outputs of every default-ablation run, when benchmarks are configured."""
    return run_paths(filename) if CFG["ood"]["benchmarks"] else []


def judged_generations(filename):
    """RPO's and each baseline's generations (default ablation) for one judge job, in JUDGED_METHODS order."""

    def paths(wildcards):
        if filename == "ood_generations.jsonl" and not CFG["ood"]["benchmarks"]:
            return []
        cells = [dict(model=wildcards.model, method=m, ablation="default", seed=wildcards.seed) for m in JUDGED_METHODS]
        return [f"{RUN_DIR.format(**cell)}/{filename}" for cell in cells]

    return paths


def method_pairs(paths):
    return [f"{method}={path}" for method, path in zip(JUDGED_METHODS, paths)]
