rule table2:
    input:
        config=CONFIG_FILE,
        scores=run_paths("scores.json"),
    output:
        md=f"{RESULTS}/tables/table2.md",
        csv=f"{RESULTS}/tables/table2.csv",
    log:
        f"{RESULTS}/logs/table2.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    shell:
        "rpo report --config {input.config} --scores {input.scores} --out-md {output.md} "
        "--out-csv {output.csv} 2>&1 | tee {log}"


# `snakemake results/tables/table2.md` names the current config's table without its name.
rule latest_table:
    input:
        f"{RESULTS}/tables/{{table}}",
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
