import json
import re

from snakemake.utils import validate

from rpo import config as rpo_config

validate(config, "../schemas/config.schema.yaml")
CFG = rpo_config.resolve(config, source="snakemake config")
RESULTS = f"results/{CFG['name']}"
RUNS = rpo_config.runs(CFG)
RUN_DIR = f"{RESULTS}/{{model}}/{{method}}/{{ablation}}/seed{{seed}}"
CONDA_ENV = "../../environment.yml"
CONFIG_FILE = f"{RESULTS}/config.yaml"


wildcard_constraints:
    model="|".join(map(re.escape, CFG["models"])),
    method="|".join(map(re.escape, CFG["methods"])),
    ablation="|".join(map(re.escape, CFG["ablations"])),
    seed=r"\d+",


def run_paths(filename, ablation="default"):
    """One path per training cell of an ablation."""
    return [
        f"{RUN_DIR.format(**cell)}/{filename}"
        for cell in RUNS
        if cell["ablation"] == ablation
    ]
