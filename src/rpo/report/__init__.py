"""Stage 5, report (workflow/rules/report.smk): per-run files -> the paper's tables and figures (rpo.paper names
them), the comparison with the paper's values, and one MLflow report run linking them."""
