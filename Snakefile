# rpo-pipeline: data -> reference model and log-probs -> training -> generation -> scoring -> tables.
# Rules are thin: each calls one `rpo` subcommand. Science lives in src/rpo/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/tiny.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{RESULTS}/tables/table2.md",
        f"{RESULTS}/tables/table2.csv",
        run_paths("scores.json", ablation=None),
        ood_paths("ood_scores.json"),
        judge_paths(),
        [f"{DATA}.dvc"] if CFG["data"]["dvc"] else [],
    default_target: True
