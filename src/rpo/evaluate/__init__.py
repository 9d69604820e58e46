"""Stage 4, evaluate (workflow/rules/evaluate.smk): a trained policy -> generations on held-out prompts and OOD
benchmarks, their metrics with bootstrap intervals, and pairwise win rates by each judge."""
