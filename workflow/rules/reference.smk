rule init_model:
    input:
        config=SHARED_CONFIG,
        train=rules.prepare_data.output.train,
        eval=rules.prepare_data.output.eval,
    output:
        directory(REFERENCE_MODEL),
    log:
        log_file("{model}/init_model"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        rpo_step(
            "init-model --config {input.config} --model {wildcards.model} --train {input.train} --eval {input.eval} "
            "--out-dir {output}"
        )


# The synthetic world's training set, sampled from each model's reference (data.sample_from_reference).
rule sample_training_data:
    input:
        config=SHARED_CONFIG,
        model=rules.init_model.output,
        train=rules.prepare_data.output.train,
    output:
        train=f"{RESULTS}/{{model}}/data/train.parquet",
        manifest=f"{RESULTS}/{{model}}/data/manifest.json",
    log:
        log_file("{model}/sample_training_data"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=3000,
    shell:
        rpo_step(
            "sample-data --config {input.config} --model {wildcards.model} --model-dir {input.model} "
            "--train {input.train} --out {output.train}"
        )


rule reference_logprobs:
    input:
        config=SHARED_CONFIG,
        model=rules.init_model.output,
        train=base_training_table,
    output:
        f"{RESULTS}/{{model}}/reference_logprobs.parquet",
    log:
        log_file("{model}/reference_logprobs"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
    shell:
        rpo_step(
            "ref-logprobs --config {input.config} --model {wildcards.model} --model-dir {input.model} "
            "--train {input.train} --out {output}"
        )


# The optimum table and Figure 3: N completions per held-out prompt from the reference, scored by the true reward.
rule reference_samples:
    input:
        config=SHARED_CONFIG,
        model=rules.init_model.output,
        eval=rules.prepare_data.output.eval,
        train=base_training_table,
    output:
        test=f"{RESULTS}/{{model}}/reference/optimum_samples.jsonl",
        train=f"{RESULTS}/{{model}}/reference/optimum_train_samples.jsonl",
    log:
        log_file("{model}/reference_samples"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=3000,
    shell:
        rpo_step(
            "reference-samples --config {input.config} --model {wildcards.model} --model-dir {input.model} "
            "--eval {input.eval} --train {input.train} --out {output.test} --train-out {output.train}"
        )


# QRPO's reference rewards: objective.qrpo.ref_samples completions per training prompt from the reference, scored.
rule reference_rewards:
    input:
        config=SHARED_CONFIG,
        model=rules.init_model.output,
        train=base_training_table,
    output:
        f"{RESULTS}/{{model}}/reference/qrpo_rewards.parquet",
    log:
        log_file("{model}/reference_rewards"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=3000,
    shell:
        rpo_step(
            "reference-rewards --config {input.config} --model {wildcards.model} --model-dir {input.model} "
            "--train {input.train} --out {output}"
        )
