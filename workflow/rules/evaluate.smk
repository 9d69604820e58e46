rule generate:
    input:
        config=CONFIG_FILE,
        model=rules.train.output.model,
        eval=rules.prepare_data.output.eval,
    output:
        f"{RUN_DIR}/generations.jsonl",
    log:
        f"{RESULTS}/logs/{{model}}/{{method}}/{{ablation}}/seed{{seed}}/generate.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
    shell:
        "rpo generate --config {input.config} --model {wildcards.model} --method {wildcards.method} "
        "--ablation {wildcards.ablation} --seed {wildcards.seed} --model-dir {input.model} "
        "--eval {input.eval} --out {output} 2>&1 | tee {log}"


rule score:
    input:
        config=CONFIG_FILE,
        generations=rules.generate.output,
    output:
        f"{RUN_DIR}/scores.json",
    log:
        f"{RESULTS}/logs/{{model}}/{{method}}/{{ablation}}/seed{{seed}}/score.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        "rpo score --config {input.config} --model {wildcards.model} --method {wildcards.method} "
        "--ablation {wildcards.ablation} --seed {wildcards.seed} --generations {input.generations} "
        "--out {output} 2>&1 | tee {log}"
