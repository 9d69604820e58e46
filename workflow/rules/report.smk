rule table2:
    input:
        config=DEFAULT_CONFIG,
        runs=run_paths("scores.json") + judge_paths(["default"], scopes=["in_domain"]),
    output:
        md=report(f"{TABLE_DIR}/table2.md", caption="../report/table.rst", category="Tables"),
        csv=f"{TABLE_DIR}/table2.csv",
        tex=f"{TABLE_DIR}/table2.tex",
        runs=f"{TABLE_DIR}/table2.runs.json",
    params:
        prefix=out_prefix,
    log:
        f"{RESULTS}/logs/table2.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    shell:
        "rpo report --config {input.config} --what table2 --out-prefix {params.prefix} {input.runs} 2>&1 | tee {log}"


rule table3:
    input:
        config=DEFAULT_CONFIG,
        runs=judge_paths(["default"], scopes=["ood"]) + ood_paths("ood_scores.json"),
    output:
        md=report(f"{TABLE_DIR}/table3.md", caption="../report/table.rst", category="Tables"),
        csv=f"{TABLE_DIR}/table3.csv",
        tex=f"{TABLE_DIR}/table3.tex",
        runs=f"{TABLE_DIR}/table3.runs.json",
    params:
        prefix=out_prefix,
    log:
        f"{RESULTS}/logs/table3.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    shell:
        "rpo report --config {input.config} --what table3 --out-prefix {params.prefix} {input.runs} 2>&1 | tee {log}"


rule ablation_table:
    input:
        config=table_config,
        runs=ablation_table_inputs,
    output:
        md=report(f"{TABLE_DIR}/{{table}}.md", caption="../report/table.rst", category="Tables"),
        csv=f"{TABLE_DIR}/{{table}}.csv",
        tex=f"{TABLE_DIR}/{{table}}.tex",
        runs=f"{TABLE_DIR}/{{table}}.runs.json",
    wildcard_constraints:
        table="table[4-7]",
    params:
        prefix=out_prefix,
    log:
        f"{RESULTS}/logs/{{table}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    shell:
        "rpo report --config {input.config} --what {wildcards.table} --out-prefix {params.prefix} "
        "{input.runs} 2>&1 | tee {log}"


rule figure1:
    input:
        config=DEFAULT_CONFIG,
        runs=run_paths("train.json"),
    output:
        png=report(f"{FIGURE_DIR}/{FIGURES['figure1']}.png", caption="../report/figure1.rst", category="Figures"),
        pdf=f"{FIGURE_DIR}/{FIGURES['figure1']}.pdf",
        runs=f"{FIGURE_DIR}/{FIGURES['figure1']}.runs.json",
    params:
        prefix=out_prefix,
    log:
        f"{RESULTS}/logs/figure1.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1500,
    shell:
        "rpo report --config {input.config} --what figure1 --out-prefix {params.prefix} {input.runs} "
        "2>&1 | tee {log}"


rule figure2:
    input:
        config=DEFAULT_CONFIG,
        runs=run_paths("kl.csv") + run_paths("train.json"),
    output:
        png=report(f"{FIGURE_DIR}/{FIGURES['figure2']}.png", caption="../report/figure2.rst", category="Figures"),
        pdf=f"{FIGURE_DIR}/{FIGURES['figure2']}.pdf",
        runs=f"{FIGURE_DIR}/{FIGURES['figure2']}.runs.json",
    params:
        prefix=out_prefix,
    log:
        f"{RESULTS}/logs/figure2.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1500,
    shell:
        "rpo report --config {input.config} --what figure2 --out-prefix {params.prefix} {input.runs} "
        "2>&1 | tee {log}"


rule paper_comparison:
    input:
        config=CONFIG_FILE,
        tables=expand(f"{TABLE_DIR}/{{table}}.csv", table=TABLES),
        sidecars=expand(f"{TABLE_DIR}/{{table}}.runs.json", table=TABLES),
    output:
        md=report(f"{RESULTS}/paper_comparison.md", caption="../report/comparison.rst", category="Paper"),
        runs=f"{RESULTS}/paper_comparison.runs.json",
    log:
        f"{RESULTS}/logs/paper_comparison.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    shell:
        "rpo report --config {input.config} --what paper_comparison --out-prefix {output.md} {input.tables} 2>&1 | tee {log}"


rule mlflow_report_run:
    input:
        config=CONFIG_FILE,
        files=report_files(),
    output:
        f"{RESULTS}/report_run.json",
    log:
        f"{RESULTS}/logs/mlflow_report_run.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    shell:
        "rpo report --config {input.config} --what mlflow_run --out-prefix {output} {input.files} 2>&1 | tee {log}"


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
