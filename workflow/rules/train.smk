rule train:
    input:
        config=ablation_config,
        init=rules.init_model.output,
        train=training_table,
        base=base_training_table,
        ref=rules.reference_logprobs.output,
        eval=rules.prepare_data.output.eval,
    output:
        model=directory(f"{RUN_DIR}/model"),
        summary=f"{RUN_DIR}/train.json",
        kl=f"{RUN_DIR}/kl.csv",
    log:
        f"{RESULTS}/logs/{{model}}/{{method}}/{{ablation}}/seed{{seed}}/train.log",
    conda:
        CONDA_ENV
    params:
        launcher=train_launcher,
    resources:
        mem_mb=4000,
    shell:
        "{params.launcher} train --config {input.config} --model {wildcards.model} --method {wildcards.method} "
        "--ablation {wildcards.ablation} --seed {wildcards.seed} --init {input.init} --train {input.train} "
        "--base-train {input.base} --ref {input.ref} --eval {input.eval} --out-dir $(dirname {output.summary}) 2>&1 | tee {log}"
