"""Stage 1, data (workflow/rules/data.smk): (prompt, response, reward) triplets from the hub, a file or the synthetic
world -> checked train/eval tables with standardised rewards, a manifest and rejects; the ablations' variants."""
