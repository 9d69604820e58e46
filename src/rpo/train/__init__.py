"""Stage 3, train (workflow/rules/train.smk): one (model, method, ablation, seed) cell -> a trained policy, train.json
and its KL curve. Objectives are pure functions in one registry (objectives.py); the loop knows nothing else."""
