rule resolve_config:
    output:
        f"{RESULTS}/{{config_slice}}.yaml",
    log:
        log_file("resolve_{config_slice}"),
    wildcard_constraints:
        config_slice=CONFIG_SLICES,
    conda:
        CONDA_ENV
    resources:
        mem_mb=500,
    params:
        config_json=lambda wildcards: config_slice_json(wildcards.config_slice),
        store=lambda wildcards: "--create-store" if wildcards.config_slice == "config" else "",
    shell:
        rpo_step("config --json {params.config_json:q} --out {output} {params.store}")


rule prepare_data:
    input:
        config=SHARED_CONFIG,
    output:
        train=f"{DATA}/train.parquet",
        eval=f"{DATA}/eval.parquet",
        manifest=f"{DATA}/manifest.json",
    log:
        log_file("prepare_data"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        rpo_step("prepare-data --config {input.config} --out-dir $(dirname {output.train})")


# The ablations' training tables: of the shared prepared data, or of a model's tables sampled from its reference.
rule data_variant:
    input:
        config=SHARED_CONFIG,
        train="{tables}/train.parquet",
    output:
        "{tables}/train_{kind}{value}.parquet",
    log:
        log_file("data_variant/{tables}/{kind}{value}"),
    wildcard_constraints:
        tables=TABLE_FOLDERS,
        kind="density|noise",
        value=r"[0-9.]+",
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        rpo_step(
            "data-variant --config {input.config} --train {input.train} --kind {wildcards.kind} "
            "--value {wildcards.value} --out {output}"
        )


rule version_data:
    input:
        config=SHARED_CONFIG,
        tables=data_tables(),
        manifest=rules.prepare_data.output.manifest,
    output:
        f"{DATA}.dvc",
    log:
        log_file("version_data"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    params:
        folder=lambda wildcards, output: output[0].removesuffix(".dvc"),
    shell:
        rpo_step("version-data --path {params.folder}")
