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


wildcard_constraints:
    model="|".join(map(re.escape, CFG["models"])),
    method="|".join(map(re.escape, CFG["methods"])),
    ablation="|".join(map(re.escape, CFG["ablations"])),
    seed=r"\d+",


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
