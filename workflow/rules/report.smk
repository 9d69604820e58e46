rule table2:
    input:
        config=DEFAULT_CONFIG,
        runs=run_paths("scores.json")
        + run_paths("train.json")
        + reference_paths("scores.json")
        + judge_paths(["default"], scopes=["in_domain"]),
    output:
        **table_outputs("table2"),
    log:
        log_file("table2"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    params:
        what="table2",
        prefix=out_prefix,
    shell:
        rpo_step(REPORT_STEP)


rule table3:
    input:
        config=DEFAULT_CONFIG,
        runs=judge_paths(["default"], scopes=["ood"]) + ood_paths("ood_scores.json"),
    output:
        **table_outputs("table3"),
    log:
        log_file("table3"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    params:
        what="table3",
        prefix=out_prefix,
    shell:
        rpo_step(REPORT_STEP)


rule ablation_table:
    input:
        config=table_config,
        runs=ablation_table_inputs,
    output:
        **table_outputs("{table}"),
    log:
        log_file("{table}"),
    wildcard_constraints:
        table="|".join(paper.ABLATION_TABLES),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    params:
        what="{table}",
        prefix=out_prefix,
    shell:
        rpo_step(REPORT_STEP)


rule figure1:
    input:
        config=DEFAULT_CONFIG,
        runs=run_paths("train.json"),
    output:
        **figure_outputs("figure1"),
    log:
        log_file("figure1"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1500,
    params:
        what="figure1",
        prefix=out_prefix,
    shell:
        rpo_step(REPORT_STEP)


rule figure2:
    input:
        config=DEFAULT_CONFIG,
        runs=run_paths("kl.csv") + run_paths("train.json"),
    output:
        **figure_outputs("figure2"),
    log:
        log_file("figure2"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1500,
    params:
        what="figure2",
        prefix=out_prefix,
    shell:
        rpo_step(REPORT_STEP)


# Beyond the paper: the optimum table, the paired comparisons and the diagnosis.
rule table_optimum:
    input:
        config=CONFIG_FILE,
        runs=lambda wildcards: optimum_inputs(wildcards.table),
    output:
        **table_outputs("{table}"),
    log:
        log_file("{table}"),
    wildcard_constraints:
        table="|".join(paper.OPTIMUM_TABLES),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1500,
    params:
        what="{table}",
        prefix=out_prefix,
    shell:
        rpo_step(REPORT_STEP)


rule figure3:
    input:
        config=CONFIG_FILE,
        runs=optimum_inputs(),
    output:
        **figure_outputs("figure3"),
    log:
        log_file("figure3"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1500,
    params:
        what="figure3",
        prefix=out_prefix,
    shell:
        rpo_step(REPORT_STEP)


rule figure4:
    input:
        config=CONFIG_FILE,
        runs=optimum_inputs("figure4"),
    output:
        **figure_outputs("figure4"),
    log:
        log_file("figure4"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1500,
    params:
        what="figure4",
        prefix=out_prefix,
    shell:
        rpo_step(REPORT_STEP)


rule paper_comparison:
    input:
        config=CONFIG_FILE,
        runs=expand(f"{TABLE_DIR}/{{table}}.csv", table=paper.TABLES),
        sidecars=expand(f"{TABLE_DIR}/{{table}}.runs.json", table=paper.TABLES),
    output:
        md=report(f"{RESULTS}/paper_comparison.md", caption="../report/comparison.rst", category="Paper"),
        runs=f"{RESULTS}/paper_comparison.runs.json",
    log:
        log_file("paper_comparison"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    params:
        what="paper_comparison",
        prefix=lambda wildcards, output: output.md,
    shell:
        rpo_step(REPORT_STEP)


rule mlflow_report_run:
    input:
        config=CONFIG_FILE,
        runs=report_files(),
    output:
        f"{RESULTS}/report_run.json",
    log:
        log_file("mlflow_report_run"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    params:
        what="mlflow_run",
        prefix=lambda wildcards, output: output[0],
    shell:
        rpo_step(REPORT_STEP)


# `snakemake results/tables/table2.md` names the current config's table without its name.
rule latest_table:
    input:
        f"{TABLE_DIR}/{{table}}",
    output:
        "results/tables/{table}",
    log:
        "results/logs/latest_{table}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=500,
    shell:
        "cp {input} {output} 2>&1 | tee {log}"
