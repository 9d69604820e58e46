rule resolve_config:
    output:
        CONFIG_FILE,
    params:
        config_json=json.dumps(CFG, sort_keys=True),
    log:
        f"{RESULTS}/logs/resolve_config.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=500,
    shell:
        "rpo config --json {params.config_json:q} --out {output} --create-store 2>&1 | tee {log}"


rule resolve_shared_config:
    output:
        SHARED_CONFIG,
    params:
        config_json=config_slice([]),
    log:
        f"{RESULTS}/logs/resolve_shared_config.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=500,
    shell:
        "rpo config --json {params.config_json:q} --out {output} 2>&1 | tee {log}"


rule resolve_ablation_config:
    output:
        ABLATION_CONFIG,
    params:
        config_json=lambda wildcards: config_slice([wildcards.ablation]),
    log:
        f"{RESULTS}/logs/resolve_config_{{ablation}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=500,
    shell:
        "rpo config --json {params.config_json:q} --out {output} 2>&1 | tee {log}"


rule resolve_table_config:
    output:
        TABLE_CONFIG,
    params:
        config_json=lambda wildcards: config_slice(ablations_of(wildcards.table)),
    wildcard_constraints:
        table="table[4-7]",
    log:
        f"{RESULTS}/logs/resolve_config_{{table}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=500,
    shell:
        "rpo config --json {params.config_json:q} --out {output} 2>&1 | tee {log}"


rule prepare_data:
    input:
        config=SHARED_CONFIG,
    output:
        train=f"{DATA}/train.parquet",
        eval=f"{DATA}/eval.parquet",
        manifest=f"{DATA}/manifest.json",
    log:
        f"{RESULTS}/logs/prepare_data.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        "rpo prepare-data --config {input.config} --out-dir $(dirname {output.train}) 2>&1 | tee {log}"


rule data_variant:
    input:
        config=SHARED_CONFIG,
        train=rules.prepare_data.output.train,
    output:
        f"{DATA}/train_{{kind}}{{value}}.parquet",
    wildcard_constraints:
        kind="density|noise",
        value=r"[0-9.]+",
    log:
        f"{RESULTS}/logs/data_variant_{{kind}}{{value}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        "rpo data-variant --config {input.config} --train {input.train} --kind {wildcards.kind} "
        "--value {wildcards.value} --out {output} 2>&1 | tee {log}"


rule init_model:
    input:
        config=SHARED_CONFIG,
        train=rules.prepare_data.output.train,
        eval=rules.prepare_data.output.eval,
    output:
        directory(f"{RESULTS}/{{model}}/reference"),
    log:
        f"{RESULTS}/logs/{{model}}/init_model.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        "rpo init-model --config {input.config} --model {wildcards.model} --train {input.train} --eval {input.eval} "
        "--out-dir {output} 2>&1 | tee {log}"


rule sample_training_data:
    input:
        config=SHARED_CONFIG,
        model=rules.init_model.output,
        train=rules.prepare_data.output.train,
    output:
        train=f"{RESULTS}/{{model}}/data/train.parquet",
        manifest=f"{RESULTS}/{{model}}/data/manifest.json",
    log:
        f"{RESULTS}/logs/{{model}}/sample_training_data.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=3000,
    shell:
        "rpo sample-data --config {input.config} --model {wildcards.model} --model-dir {input.model} "
        "--train {input.train} --out {output.train} 2>&1 | tee {log}"


rule model_data_variant:
    input:
        config=SHARED_CONFIG,
        train=rules.sample_training_data.output.train,
    output:
        f"{RESULTS}/{{model}}/data/train_{{kind}}{{value}}.parquet",
    wildcard_constraints:
        kind="density|noise",
        value=r"[0-9.]+",
    log:
        f"{RESULTS}/logs/{{model}}/data_variant_{{kind}}{{value}}.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        "rpo data-variant --config {input.config} --train {input.train} --kind {wildcards.kind} "
        "--value {wildcards.value} --out {output} 2>&1 | tee {log}"


rule reference_logprobs:
    input:
        config=SHARED_CONFIG,
        model=rules.init_model.output,
        train=base_training_table,
    output:
        f"{RESULTS}/{{model}}/reference_logprobs.parquet",
    log:
        f"{RESULTS}/logs/{{model}}/reference_logprobs.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
    shell:
        "rpo ref-logprobs --config {input.config} --model {wildcards.model} --model-dir {input.model} "
        "--train {input.train} --out {output} 2>&1 | tee {log}"


rule version_data:
    input:
        config=SHARED_CONFIG,
        tables=data_tables(),
        manifest=rules.prepare_data.output.manifest,
    output:
        f"{DATA}.dvc",
    params:
        folder=lambda wildcards, output: output[0].removesuffix(".dvc"),
    log:
        f"{RESULTS}/logs/version_data.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    shell:
        "rpo version-data --path {params.folder} 2>&1 | tee {log}"
