rule generate:
    input:
        config=ablation_config,
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
        config=ablation_config,
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


rule generate_ood:
    input:
        config=ablation_config,
        model=rules.train.output.model,
    output:
        f"{RUN_DIR}/ood_generations.jsonl",
    log:
        f"{RESULTS}/logs/{{model}}/{{method}}/{{ablation}}/seed{{seed}}/generate_ood.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
    shell:
        "rpo generate-ood --config {input.config} --model {wildcards.model} --method {wildcards.method} "
        "--ablation {wildcards.ablation} --seed {wildcards.seed} --model-dir {input.model} --out {output} 2>&1 | tee {log}"


rule score_ood:
    input:
        config=ablation_config,
        generations=rules.generate_ood.output,
    output:
        f"{RUN_DIR}/ood_scores.json",
    log:
        f"{RESULTS}/logs/{{model}}/{{method}}/{{ablation}}/seed{{seed}}/score_ood.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    shell:
        "rpo score-ood --config {input.config} --model {wildcards.model} --method {wildcards.method} "
        "--ablation {wildcards.ablation} --seed {wildcards.seed} --generations {input.generations} "
        "--out {output} 2>&1 | tee {log}"


rule judge:
    input:
        config=ablation_config,
        generations=judged_generations,
    output:
        f"{RESULTS}/{{model}}/judge/{{judge}}/{{ablation}}/seed{{seed}}/{{scope}}_rpo_vs_{{baseline}}.json",
    params:
        generations=lambda wildcards, input: method_pairs(wildcards, input.generations),
    log:
        f"{RESULTS}/logs/{{model}}/judge/{{judge}}_{{ablation}}_seed{{seed}}_{{scope}}_rpo_vs_{{baseline}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        "rpo judge --config {input.config} --model {wildcards.model} --method rpo --ablation {wildcards.ablation} "
        "--seed {wildcards.seed} --judge {wildcards.judge} --scope {wildcards.scope} --generations {params.generations} "
        "--out {output} 2>&1 | tee {log}"
