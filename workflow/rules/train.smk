rule train:
    input:
        config=ablation_config,
        init=rules.init_model.output,
        train=training_table,
        base=base_training_table,
        ref=rules.reference_logprobs.output,
        eval=rules.prepare_data.output.eval,
        pointer=data_pointer(),
        ref_rewards=reference_rewards,
    output:
        model=directory(f"{RUN_DIR}/model"),
        summary=f"{RUN_DIR}/train.json",
        kl=f"{RUN_DIR}/kl.csv",
    log:
        f"{RUN_LOGS}/train.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
    params:
        launcher=train_launcher,
        dvc=lambda wildcards, input: f"--dvc-pointer {input.pointer}" if input.pointer else "",
        ref_rewards=reference_rewards_flag,
    shell:
        rpo_step(
            f"train --config {{input.config}} {CELL_ARGS} --init {{input.init}} --train {{input.train}} "
            "--base-train {input.base} --ref {input.ref} --eval {input.eval} {params.dvc} {params.ref_rewards} "
            "--out-dir $(dirname {output.summary})",
            launcher="{params.launcher}",
        )
