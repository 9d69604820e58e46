import json
import re
import sys

from rpo import config as rpo_config
from rpo import paper
from rpo import paths as rpo_paths
from rpo.errors import ConfigError

# The project's own validator, not snakemake.utils.validate (which dumps the schema): one line per error naming the
# key, duplicate YAML keys refused, and every per-model and per-ablation override checked before any job starts.
try:
    for config_file in workflow.configfiles:
        rpo_config.read_yaml(config_file)
    CFG = rpo_config.resolve(config, source=", ".join(map(str, workflow.configfiles)) or "snakemake config")
    rpo_config.check_every_cell(CFG, "config")
except ConfigError as exc:
    sys.exit(f"error: {exc}")
RESULTS = f"results/{CFG['name']}"
RUNS = rpo_config.runs(CFG)
ABLATION_CFG = {name: rpo_config.for_ablation(CFG, name) for name in CFG["ablations"]}
RUN_DIR = f"{RESULTS}/{{model}}/{{method}}/{{ablation}}/seed{{seed}}"
# The policy every method starts from lives in <model>/reference/model and is evaluated like a method, once: as the
# run <model>/reference/default/seed<first seed>.
REFERENCE_MODEL = f"{RESULTS}/{{model}}/reference/model"
REFERENCE_SEED = rpo_config.ablation_seeds(CFG, "default")[0]
OPTIMUM = rpo_config.optimum_enabled(CFG)
REFERENCE_REWARDS = rpo_config.draws_reference_rewards(CFG)
DATA = f"data/prepared/{CFG['name']}"
JUDGES = list(CFG["judge"]["judges"])
TABLE_DIR = f"{RESULTS}/tables"
FIGURE_DIR = f"{RESULTS}/figures"


# ----------------------------------------------------------------------------- what every thin rule shares
CONDA_ENV = "../../environment.yml"
# A training cell's wildcards as `rpo` flags, and where its jobs log.
CELL_ARGS = (
    "--model {wildcards.model} --method {wildcards.method} --ablation {wildcards.ablation} --seed {wildcards.seed}"
)
RUN_LOGS = f"{RESULTS}/logs/{{model}}/{{method}}/{{ablation}}/seed{{seed}}"


def log_file(name):
    """A rule's log, under results/<config>/logs/ (`name` may hold wildcards)."""
    return f"{RESULTS}/logs/{name}.log"


def rpo_step(args, launcher="rpo"):
    """A thin rule's shell command: one `rpo` step, its output also written to the rule's log."""
    return f"{launcher} {args} 2>&1 | tee {{log}}"


wildcard_constraints:
    model="|".join(map(re.escape, CFG["models"])),
    method="|".join(map(re.escape, [*CFG["methods"], paper.REFERENCE])),
    ablation="|".join(map(re.escape, CFG["ablations"])),
    seed=r"\d+",
    judge="|".join(map(re.escape, JUDGES)) or "no-judge-configured",
    baseline="|".join([*paper.BASELINES, paper.REFERENCE]),
    scope="in_domain|ood",


# ----------------------------------------------------------------------------- resolved configs
# Every job reads the narrowest resolved config it depends on, so that changing one ablation reruns only its jobs:
# the whole config (tables spanning ablations), one ablation's slice, an ablation table's, or the shared slice.
CONFIG_FILE = f"{RESULTS}/config.yaml"
SHARED_CONFIG = f"{RESULTS}/configs/shared.yaml"
ABLATION_CONFIG = f"{RESULTS}/configs/ablation_{{ablation}}.yaml"
TABLE_CONFIG = f"{RESULTS}/configs/{{table}}.yaml"
DEFAULT_CONFIG = ABLATION_CONFIG.format(ablation="default")
# The slices, as the `config_slice` wildcard of resolve_config's output: <RESULTS>/<config_slice>.yaml
CONFIG_SLICES = "config|configs/shared|configs/ablation_({})|configs/({})".format(
    "|".join(map(re.escape, CFG["ablations"])), "|".join(paper.ABLATION_TABLES)
)


def ablations_of(table):
    return [a for a in CFG["ablations"] if paper.ablation_table(CFG, a) == table]


def config_slice_json(name):
    """The resolved config a slice holds: all of it, or what jobs depending on some ablations only read."""
    if name == "config":
        return json.dumps(CFG, sort_keys=True)
    part = name.removeprefix("configs/")
    if part == "shared":
        ablations = []
    elif part.startswith("ablation_"):
        ablations = [part.removeprefix("ablation_")]
    else:
        ablations = ablations_of(part)
    return json.dumps(rpo_config.slice_for(CFG, ablations), sort_keys=True)


def ablation_config(wildcards):
    return ABLATION_CONFIG.format(ablation=wildcards.ablation)


def table_config(wildcards):
    return TABLE_CONFIG.format(table=wildcards.table)


# ----------------------------------------------------------------------------- data and runs
SAMPLED = CFG["data"]["sample_from_reference"]["completions"] > 0
# Folders of training tables: the shared prepared data, or each model's own when sampled from its reference.
TABLE_FOLDERS = "|".join([re.escape(DATA), *(re.escape(f"{RESULTS}/{m}/data") for m in CFG["models"])])


def run_paths(filename, ablation="default"):
    """One path per training cell of an ablation (None: of every ablation)."""
    return [f"{RUN_DIR.format(**cell)}/{filename}" for cell in RUNS if ablation in (None, cell["ablation"])]


def reference_paths(filename):
    """The reference's evaluation run of every model."""
    return [f"{RESULTS}/{m}/{paper.REFERENCE}/default/seed{REFERENCE_SEED}/{filename}" for m in CFG["models"]]


def policy_dir(wildcards):
    """The model a run evaluates: the trained policy, or for the reference's run the reference itself."""
    if wildcards.method == paper.REFERENCE:
        return REFERENCE_MODEL.format(model=wildcards.model)
    cell = dict(model=wildcards.model, method=wildcards.method, ablation=wildcards.ablation, seed=wildcards.seed)
    return f"{RUN_DIR.format(**cell)}/model"


def model_data(model):
    """Where a model's training tables live: shared, or its own when sampled from its reference."""
    return f"{RESULTS}/{model}/data" if SAMPLED else DATA


def base_training_table(wildcards):
    return f"{model_data(wildcards.model)}/train.parquet"


def training_table(wildcards):
    """The full training table, or the ablation's density/noise variant of it."""
    name = rpo_config.training_table_name(ABLATION_CFG[wildcards.ablation])
    return f"{model_data(wildcards.model)}/{name}.parquet"


def reference_rewards(wildcards):
    """QRPO's scored reference samples per training prompt, for the methods that read them, where the config draws
    them (else the method measures each reward against the prompt's own completions)."""
    needed = REFERENCE_REWARDS and wildcards.method in paper.REFERENCE_REWARD_METHODS
    return [f"{RESULTS}/{wildcards.model}/{paper.REFERENCE}/qrpo_rewards.parquet"] if needed else []


def reference_rewards_flag(wildcards, input):
    return f"--ref-rewards {input.ref_rewards}" if input.ref_rewards else ""


def data_pointer():
    """The prepared data's DVC pointer, when the config versions it: training checks its tables against it."""
    return [f"{DATA}.dvc"] if CFG["data"]["dvc"] else []


def data_tables():
    """Every table the config's runs train or evaluate on: what the data version covers."""
    names = set() if SAMPLED else {rpo_config.training_table_name(cfg) for cfg in ABLATION_CFG.values()}
    return [f"{DATA}/{name}.parquet" for name in sorted(names | {"train", "eval"})]


def ood_paths(filename):
    """OOD outputs of every default-ablation run and the reference's, when benchmarks are configured."""
    return run_paths(filename) + reference_paths(filename) if CFG["ood"]["benchmarks"] else []


def train_launcher(wildcards, resources):
    """Several GPUs for one training job: `accelerate launch` with the FSDP config; else plain `rpo`."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    if gpus <= 1:
        return "rpo"
    fsdp = f"{workflow.basedir}/config/accelerate/fsdp.yaml"
    return f"accelerate launch --config_file {fsdp} --num_processes {gpus} $(command -v rpo)"


# ----------------------------------------------------------------------------- judging
def opponents(ablation, scope):
    """Whom RPO of an ablation is judged against: every baseline by default (and, in-domain, the reference it
    started from), the configured one for an ablation."""
    if "rpo" not in rpo_config.ablation_methods(CFG, ablation):
        return []
    if ablation != "default":
        return [m for m in [CFG["judge"]["ablation_baseline"]] if m in CFG["methods"]]
    baselines = [m for m in CFG["judge"]["baselines"] if m in CFG["methods"]]
    return baselines + [paper.REFERENCE] if scope == "in_domain" else baselines


def judged_generations(wildcards):
    """What one judge job compares: RPO of the ablation, then the baseline's default run."""
    filename = "generations.jsonl" if wildcards.scope == "in_domain" else "ood_generations.jsonl"
    rpo = dict(model=wildcards.model, method="rpo", ablation=wildcards.ablation, seed=wildcards.seed)
    baseline = dict(rpo, method=wildcards.baseline, ablation="default")
    if wildcards.baseline == paper.REFERENCE:
        baseline["seed"] = REFERENCE_SEED
    return [f"{RUN_DIR.format(**cell)}/{filename}" for cell in (rpo, baseline)]


def method_pairs(wildcards, paths):
    return [f"{method}={path}" for method, path in zip(["rpo", wildcards.baseline], paths)]


def judge_paths(ablations=None, baselines=(*paper.BASELINES, paper.REFERENCE), scopes=("in_domain", "ood")):
    """One win-rate file per (model, judge, ablation, seed, scope, baseline); OOD for the default runs only."""
    return [
        f"{RESULTS}/{model}/judge/{judge}/{ablation}/seed{seed}/{scope}_rpo_vs_{baseline}.json"
        for ablation in (ablations or CFG["ablations"])
        for scope in scopes
        if scope == "in_domain" or (ablation == "default" and CFG["ood"]["benchmarks"])
        for baseline in opponents(ablation, scope)
        if baseline in baselines
        for model in CFG["models"]
        for judge in JUDGES
        for seed in rpo_config.ablation_seeds(CFG, ablation)
    ]


# ----------------------------------------------------------------------------- reports
def ablation_table_inputs(wildcards):
    """Scores of RPO under the table's ablations and by default, and their win rates against the baseline."""
    ablations = [*ablations_of(wildcards.table), "default"]
    rpo_runs = [p for a in ablations for p in run_paths("{file}", ablation=a) if "/rpo/" in p]
    return (
        [p.format(file="scores.json") for p in rpo_runs]
        + [p.format(file="train.json") for p in rpo_runs]
        + reference_paths("scores.json")
        + judge_paths(ablations, baselines=[CFG["judge"]["ablation_baseline"]], scopes=["in_domain"])
    )


def report_files():
    """Everything the MLflow report run and the HTML report hold."""
    names = [*paper.TABLES, *(paper.OPTIMUM_TABLES if OPTIMUM else [])]
    tables = [f"{TABLE_DIR}/{t}.{ext}" for t in names for ext in ("md", "csv", "tex", "runs.json")]
    figures = [
        f"{FIGURE_DIR}/{f}.{ext}"
        for name, f in paper.FIGURES.items()
        if OPTIMUM or name not in paper.OPTIMUM_FIGURES
        for ext in ("png", "pdf", "runs.json")
    ]
    return tables + figures + [f"{RESULTS}/paper_comparison.md", f"{RESULTS}/paper_comparison.runs.json"]


def optimum_inputs(kind=paper.OPTIMUM_TABLE):
    """What the optimum, paired and diagnosis tables and Figures 3-4 read: the reference's samples, every policy's
    scores, KL curve and training summary; the diagnosis also each run's diagnosis and the training prompts' samples."""
    inputs = (
        [f"{RESULTS}/{m}/{paper.REFERENCE}/optimum_samples.jsonl" for m in CFG["models"]]
        + reference_paths("scores.json")
        + run_paths("scores.json", ablation=None)
        + run_paths("kl.csv", ablation=None)
        + run_paths("train.json", ablation=None)
    )
    if kind in (paper.DIAGNOSIS_TABLE, "figure4"):
        inputs += [f"{RESULTS}/{m}/{paper.REFERENCE}/optimum_train_samples.jsonl" for m in CFG["models"]]
        inputs += run_paths("diagnosis.json", ablation=None)
        inputs += [f"{model_data(m)}/train.parquet" for m in CFG["models"]]
    return inputs


def out_prefix(wildcards, output):
    """A report output's path without its suffix (every report rule writes <prefix>.runs.json)."""
    return output.runs.removesuffix(".runs.json")


def table_outputs(name):
    """A table's Markdown (in the HTML report), CSV, LaTeX and sidecar of runs."""
    return dict(
        md=report(f"{TABLE_DIR}/{name}.md", caption="../report/table.rst", category="Tables"),
        csv=f"{TABLE_DIR}/{name}.csv",
        tex=f"{TABLE_DIR}/{name}.tex",
        runs=f"{TABLE_DIR}/{name}.runs.json",
    )


def figure_outputs(name):
    prefix = f"{FIGURE_DIR}/{paper.FIGURES[name]}"
    return dict(
        png=report(f"{prefix}.png", caption=f"../report/{name}.rst", category="Figures"),
        pdf=f"{prefix}.pdf",
        runs=f"{prefix}.runs.json",
    )


# Every report rule: one `rpo report` step, with what it makes and from which files as params and inputs.
REPORT_STEP = "report --config {input.config} --what {params.what} --out-prefix {params.prefix} {input.runs}"
