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
# Every job reads the narrowest resolved config it depends on, so that changing one ablation reruns only its jobs:
# the whole config (tables spanning ablations), one ablation's slice, or the slice every ablation shares.
CONFIG_FILE = f"{RESULTS}/config.yaml"
SHARED_CONFIG = f"{RESULTS}/configs/shared.yaml"
ABLATION_CONFIG = f"{RESULTS}/configs/ablation_{{ablation}}.yaml"
TABLE_CONFIG = f"{RESULTS}/configs/{{table}}.yaml"
DATA = f"data/prepared/{CFG['name']}"
JUDGES = list(CFG["judge"]["judges"])


wildcard_constraints:
    model="|".join(map(re.escape, CFG["models"])),
    method="|".join(map(re.escape, CFG["methods"])),
    ablation="|".join(map(re.escape, CFG["ablations"])),
    seed=r"\d+",
    judge="|".join(map(re.escape, JUDGES)) or "no-judge-configured",
    baseline="sft|kto|dro",
    scope="in_domain|ood",


def run_paths(filename, ablation="default"):
    """One path per training cell of an ablation (None: of every ablation)."""
    return [
        f"{RUN_DIR.format(**cell)}/{filename}"
        for cell in RUNS
        if ablation in (None, cell["ablation"])
    ]


SAMPLED = CFG["data"]["sample_from_reference"]["completions"] > 0


def model_data(model):
    """Where a model's training tables live: shared, or its own when sampled from its reference."""
    return f"{RESULTS}/{model}/data" if SAMPLED else DATA


def base_training_table(wildcards):
    return f"{model_data(wildcards.model)}/train.parquet"


def training_table(wildcards):
    """The full training table, or the ablation's density/noise variant of it."""
    name = rpo_config.training_table_name(ABLATION_CFG[wildcards.ablation])
    return f"{model_data(wildcards.model)}/{name}.parquet"


def data_tables():
    """Every table the config's runs train or evaluate on: what the data version covers."""
    names = set() if SAMPLED else {rpo_config.training_table_name(cfg) for cfg in ABLATION_CFG.values()}
    return [f"{DATA}/{name}.parquet" for name in sorted(names | {"train", "eval"})]


def ood_paths(filename):
    """OOD outputs of every default-ablation run, when benchmarks are configured."""
    return run_paths(filename) if CFG["ood"]["benchmarks"] else []


def ablation_config(wildcards):
    return ABLATION_CONFIG.format(ablation=wildcards.ablation)


def config_slice(ablations):
    """The resolved config of jobs that depend on these ablations only ([]: the jobs all ablations share)."""
    return json.dumps(rpo_config.slice_for(CFG, ablations), sort_keys=True)


def opponents(ablation):
    """Whom RPO of an ablation is judged against: every baseline by default, the configured one for an ablation."""
    if "rpo" not in rpo_config.ablation_methods(CFG, ablation):
        return []
    candidates = CFG["judge"]["baselines"] if ablation == "default" else [CFG["judge"]["ablation_baseline"]]
    return [m for m in candidates if m in CFG["methods"]]


def judged_generations(wildcards):
    """What one judge job compares: RPO of the ablation, then the baseline's default run."""
    filename = "generations.jsonl" if wildcards.scope == "in_domain" else "ood_generations.jsonl"
    rpo = dict(model=wildcards.model, method="rpo", ablation=wildcards.ablation, seed=wildcards.seed)
    baseline = dict(rpo, method=wildcards.baseline, ablation="default")
    return [f"{RUN_DIR.format(**cell)}/{filename}" for cell in (rpo, baseline)]


def method_pairs(wildcards, paths):
    return [f"{method}={path}" for method, path in zip(["rpo", wildcards.baseline], paths)]


def judge_paths(ablations=None, baselines=("sft", "kto", "dro"), scopes=("in_domain", "ood")):
    """One win-rate file per (model, judge, ablation, seed, scope, baseline); OOD for the default runs only."""
    return [f"{RESULTS}/{model}/judge/{judge}/{ablation}/seed{seed}/{scope}_rpo_vs_{baseline}.json"
            for ablation in (ablations or CFG["ablations"]) for baseline in opponents(ablation) if baseline in baselines
            for scope in scopes if scope == "in_domain" or (ablation == "default" and CFG["ood"]["benchmarks"])
            for model in CFG["models"] for judge in JUDGES for seed in rpo_config.ablation_seeds(CFG, ablation)]


TABLES = ["table2", "table3", "table4", "table5", "table6", "table7"]
TABLE_DIR = f"{RESULTS}/tables"
FIGURE_DIR = f"{RESULTS}/figures"
FIGURES = {"figure1": "figure1_training_time", "figure2": "figure2_kl"}
DEFAULT_CONFIG = ABLATION_CONFIG.format(ablation="default")


def ablations_of(table):
    return [a for a in CFG["ablations"] if rpo_config.ablation_table(CFG, a) == table]


def table_config(wildcards):
    return TABLE_CONFIG.format(table=wildcards.table)


def ablation_table_inputs(wildcards):
    """Scores of RPO under the table's ablations and by default, and their win rates against the baseline."""
    ablations = [*ablations_of(wildcards.table), "default"]
    scores = [p for a in ablations for p in run_paths("scores.json", ablation=a) if "/rpo/" in p]
    return scores + judge_paths(ablations, baselines=[CFG["judge"]["ablation_baseline"]], scopes=["in_domain"])


def report_files():
    """Everything the MLflow report run and the HTML report hold."""
    tables = [f"{TABLE_DIR}/{t}.{ext}" for t in TABLES for ext in ("md", "csv", "tex", "runs.json")]
    figures = [f"{FIGURE_DIR}/{f}.{ext}" for f in FIGURES.values() for ext in ("png", "pdf", "runs.json")]
    return tables + figures + [f"{RESULTS}/paper_comparison.md", f"{RESULTS}/paper_comparison.runs.json"]


def out_prefix(wildcards, output):
    """A report output's path without its suffix (every report rule writes <prefix>.runs.json)."""
    return output.runs.removesuffix(".runs.json")


def train_launcher(wildcards, resources):
    """Several GPUs for one training job: `accelerate launch` with the FSDP config; else plain `rpo`."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus <= 1:
        return "rpo"
    fsdp = f"{workflow.basedir}/config/accelerate/fsdp.yaml"
    return f"accelerate launch --config_file {fsdp} --num_processes {gpus} $(command -v rpo)"
