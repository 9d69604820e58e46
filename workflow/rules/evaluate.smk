rule generate:
    input:
        config=ablation_config,
        model=policy_dir,
        eval=rules.prepare_data.output.eval,
    output:
        generations=f"{RUN_DIR}/generations.jsonl",
        samples=f"{RUN_DIR}/samples.jsonl",
    log:
        f"{RUN_LOGS}/generate.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
    shell:
        rpo_step(
            f"generate --config {{input.config}} {CELL_ARGS} --model-dir {{input.model}} --eval {{input.eval}} "
            "--out {output.generations} --samples {output.samples}"
        )


rule score:
    input:
        config=ablation_config,
        generations=rules.generate.output.generations,
        samples=rules.generate.output.samples,
        eval=rules.prepare_data.output.eval,
    output:
        f"{RUN_DIR}/scores.json",
    log:
        f"{RUN_LOGS}/score.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    shell:
        rpo_step(
            f"score --config {{input.config}} {CELL_ARGS} --generations {{input.generations}} "
            "--samples {input.samples} --eval {input.eval} --out {output}"
        )


rule generate_ood:
    input:
        config=ablation_config,
        model=policy_dir,
    output:
        f"{RUN_DIR}/ood_generations.jsonl",
    log:
        f"{RUN_LOGS}/generate_ood.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=4000,
    shell:
        rpo_step(f"generate-ood --config {{input.config}} {CELL_ARGS} --model-dir {{input.model}} --out {{output}}")


rule score_ood:
    input:
        config=ablation_config,
        generations=rules.generate_ood.output,
    output:
        f"{RUN_DIR}/ood_scores.json",
    log:
        f"{RUN_LOGS}/score_ood.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=1000,
    shell:
        rpo_step(
            f"score-ood --config {{input.config}} {CELL_ARGS} --generations {{input.generations}} --out {{output}}"
        )


rule judge:
    input:
        config=ablation_config,
        generations=judged_generations,
    output:
        f"{RESULTS}/{{model}}/judge/{{judge}}/{{ablation}}/seed{{seed}}/{{scope}}_rpo_vs_{{baseline}}.json",
    log:
        log_file("{model}/judge/{judge}_{ablation}_seed{seed}_{scope}_rpo_vs_{baseline}"),
    conda:
        CONDA_ENV
    resources:
        mem_mb=2000,
    params:
        generations=lambda wildcards, input: method_pairs(wildcards, input.generations),
    shell:
        rpo_step(
            "judge --config {input.config} --model {wildcards.model} --method rpo --ablation {wildcards.ablation} "
            "--seed {wildcards.seed} --judge {wildcards.judge} --scope {wildcards.scope} "
            "--generations {params.generations} --out {output}"
        )


# Where the policy loses the optimum's gain: forward passes over the reference's samples (rpo.evaluate.diagnose).
rule diagnose:
    input:
        config=ablation_config,
        model=f"{RUN_DIR}/model",
        test=f"{RESULTS}/{{model}}/{paper.REFERENCE}/optimum_samples.jsonl",
        samples=f"{RESULTS}/{{model}}/{paper.REFERENCE}/optimum_train_samples.jsonl",
        train=training_table,
        base=base_training_table,
        ref=rules.reference_logprobs.output,
        ref_rewards=reference_rewards,
    output:
        f"{RUN_DIR}/diagnosis.json",
    log:
        f"{RUN_LOGS}/diagnose.log",
    conda:
        CONDA_ENV
    resources:
        mem_mb=3000,
    params:
        ref_rewards=reference_rewards_flag,
    shell:
        rpo_step(
            f"diagnose --config {{input.config}} {CELL_ARGS} --model-dir {{input.model}} --test-samples {{input.test}} "
            "--train-samples {input.samples} --train {input.train} --base-train {input.base} --ref {input.ref} "
            "{params.ref_rewards} --out {output}"
        )
