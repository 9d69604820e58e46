"""Stage 2, reference (workflow/rules/reference.smk): the starting policy of every method -> built (and pretrained)
or pointed at, its sampled training set (synthetic world), and its cached log-probs of every training row."""
