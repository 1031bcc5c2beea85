# ---- Δ from a pretrained Mamba LM per context chunk (issue 5) -----------------------------------------------------
# Included by the main Makefile; uses PY, ENV_STAMP, PAPERMILL, EXECUTED, EXTRACT_SRC, DATASET, CODELM.
# One extraction per params/extract/<run>.yaml (model x prompt order). Extraction resumes sample by sample, so a rerun
# after a code change only recomputes what is missing (delete data/processed/delta/<run> to start over).
EXTRACT_PARAMS := $(sort $(wildcard params/extract/code-lm*.yaml))
EXTRACT_NAMES  := $(basename $(notdir $(EXTRACT_PARAMS)))
EXTRACT_NBS    := $(EXTRACT_NAMES:%=$(EXECUTED)/03_extract_delta/%.ipynb)
KAGGLE_PARAMS  := params/kaggle/falcon-mamba-7b.yaml
KAGGLE         ?= kaggle
KAGGLE_KERNEL  ?= $(KAGGLE_USERNAME)/deltalens-falcon-mamba-delta

.PHONY: extract kaggle kaggle-push kaggle-pull bench-extract clean-delta

$(EXECUTED)/03_extract_delta/%.ipynb: notebooks/03_extract_delta.ipynb params/extract/%.yaml $(CODELM) $(CODELM_PLAIN) $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f params/extract/$*.yaml $< $@.tmp && mv $@.tmp $@

extract: $(EXTRACT_NBS) ## Δ per context chunk from the local code LM, each prompt order (data/processed/delta/)

kaggle: $(DATASET) | $(ENV_STAMP) ## build/kaggle/: the self-contained falcon-mamba-7b extraction notebook + dataset folder
	$(PY) -m deltalens.extract.kaggle -p $(KAGGLE_PARAMS) --out build/kaggle

kaggle-push: kaggle ## upload the dataset and push the notebook to Kaggle (needs the kaggle CLI and its API token)
	@command -v $(KAGGLE) >/dev/null || { echo "kaggle CLI not found: pip install kaggle, token in ~/.kaggle/kaggle.json"; exit 1; }
	$(KAGGLE) datasets create -p build/kaggle/dataset || $(KAGGLE) datasets version -p build/kaggle/dataset -m "deltalens update"
	$(KAGGLE) kernels push -p build/kaggle/kernel

kaggle-pull: | $(ENV_STAMP) ## fetch the Kaggle run's outputs into data/kaggle/ and merge them (KAGGLE_USERNAME=you)
	@command -v $(KAGGLE) >/dev/null || { echo "kaggle CLI not found: pip install kaggle, token in ~/.kaggle/kaggle.json"; exit 1; }
	$(KAGGLE) kernels output $(KAGGLE_KERNEL) -p data/kaggle/falcon-mamba-7b
	$(PY) -m deltalens.extract merge data/kaggle/falcon-mamba-7b/delta/falcon-mamba-7b/context_first

bench-extract: $(CODELM) $(DATASET) $(DATASET_LOCAL) | $(ENV_STAMP) ## capture overhead, peak memory, tokens/s of the extraction; CPU scan and batch size -> reports/bench/
	$(PY) bench/bench_extract.py --out reports/bench/extract.json
	$(PY) bench/bench_cpu_scan.py --batch-tokens 1024,8192,auto --extract-samples 16 --out reports/bench/cpu_scan.json

clean-delta: ## remove extracted Δ (data/processed/delta/) and its executed notebooks
	rm -rf data/processed/delta $(EXECUTED)/03_extract_delta

# ---- optional: Δ per head from the Mamba-2 twin (make code-lm-mamba2; NOT in `make extract` / `make all`) ------------
# Its params live outside params/extract/, so the code-lm*.yaml wildcard above never picks them up.
EXTRACT_M2_PARAMS := params/extract-optional/code-lm-mamba2_context_first.yaml
EXTRACT_M2_NB     := $(EXECUTED)/03_extract_delta/code-lm-mamba2_context_first.ipynb

.PHONY: extract-mamba2

$(EXTRACT_M2_NB): notebooks/03_extract_delta.ipynb $(EXTRACT_M2_PARAMS) $(CODELM_M2) $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(EXTRACT_M2_PARAMS) $< $@.tmp && mv $@.tmp $@

extract-mamba2: $(EXTRACT_M2_NB) ## optional: Δ per head from the Mamba-2 twin, context first (data/processed/delta/code-lm-mamba2/)

# ---- optional: Δ per head from the hybrid code LM's Mamba-2 layers (make code-lm-hybrid; NOT in `make all`) ------------
EXTRACT_HY_PARAMS := params/extract-optional/code-lm-hybrid_context_first.yaml
EXTRACT_HY_NB     := $(EXECUTED)/03_extract_delta/code-lm-hybrid_context_first.ipynb

.PHONY: extract-hybrid

$(EXTRACT_HY_NB): notebooks/03_extract_delta.ipynb $(EXTRACT_HY_PARAMS) $(CODELM_HY) $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(EXTRACT_HY_PARAMS) $< $@.tmp && mv $@.tmp $@

extract-hybrid: $(EXTRACT_HY_NB) ## optional: Δ per head from the hybrid code LM's Mamba-2 layers, context first (data/processed/delta/code-lm-hybrid/)

# ---- optional: Δ per head from the induction-first hybrid (make code-lm-hybrid-induction; NOT in `make all`) -----------
EXTRACT_HYI_PARAMS := params/extract-optional/code-lm-hybrid-induction_context_first.yaml
EXTRACT_HYI_NB     := $(EXECUTED)/03_extract_delta/code-lm-hybrid-induction_context_first.ipynb

.PHONY: extract-hybrid-induction

$(EXTRACT_HYI_NB): notebooks/03_extract_delta.ipynb $(EXTRACT_HYI_PARAMS) $(CODELM_HYI) $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(EXTRACT_HYI_PARAMS) $< $@.tmp && mv $@.tmp $@

extract-hybrid-induction: $(EXTRACT_HYI_NB) ## optional: Δ per head from the induction-first hybrid's Mamba-2 layers, context first

# ---- optional: the hybrids' context-blind ablation (make code-lm-hybrid-plain), its context gain on the same prompts -----
EXTRACT_HYP_PARAMS := params/extract-optional/code-lm-hybrid-plain_context_first.yaml
EXTRACT_HYP_NB     := $(EXECUTED)/03_extract_delta/code-lm-hybrid-plain_context_first.ipynb

.PHONY: extract-hybrid-plain

$(EXTRACT_HYP_NB): notebooks/03_extract_delta.ipynb $(EXTRACT_HYP_PARAMS) $(CODELM_HY_PLAIN) $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(EXTRACT_HYP_PARAMS) $< $@.tmp && mv $@.tmp $@

extract-hybrid-plain: $(EXTRACT_HYP_NB) ## optional: the hybrids' context-blind ablation on the same prompts (no leave-one-out)

# ---- optional: Δ per head from the attention-first hybrid's Mamba-2 layers (make code-lm-hybrid-attnfirst) -----------
EXTRACT_HYA_PARAMS := params/extract-optional/code-lm-hybrid-attnfirst_context_first.yaml
EXTRACT_HYA_NB     := $(EXECUTED)/03_extract_delta/code-lm-hybrid-attnfirst_context_first.ipynb

.PHONY: extract-hybrid-attnfirst

$(EXTRACT_HYA_NB): notebooks/03_extract_delta.ipynb $(EXTRACT_HYA_PARAMS) $(CODELM_HYA) $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(EXTRACT_HYA_PARAMS) $< $@.tmp && mv $@.tmp $@

EXTRACT_HYAQ_PARAMS := params/extract-optional/code-lm-hybrid-attnfirst_query_first.yaml
EXTRACT_HYAQ_NB     := $(EXECUTED)/03_extract_delta/code-lm-hybrid-attnfirst_query_first.ipynb

$(EXTRACT_HYAQ_NB): notebooks/03_extract_delta.ipynb $(EXTRACT_HYAQ_PARAMS) $(CODELM_HYA) $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(EXTRACT_HYAQ_PARAMS) $< $@.tmp && mv $@.tmp $@

extract-hybrid-attnfirst: $(EXTRACT_HYA_NB) $(EXTRACT_HYAQ_NB) ## optional: Δ per head from the attention-first hybrid's Mamba-2 layers, both prompt orders

# ---- optional: the attention-first hybrid's context-blind ablation (make code-lm-hybrid-attnfirst-plain) --------------
EXTRACT_HYAP_PARAMS := params/extract-optional/code-lm-hybrid-attnfirst-plain_context_first.yaml
EXTRACT_HYAP_NB     := $(EXECUTED)/03_extract_delta/code-lm-hybrid-attnfirst-plain_context_first.ipynb

.PHONY: extract-hybrid-attnfirst-plain

$(EXTRACT_HYAP_NB): notebooks/03_extract_delta.ipynb $(EXTRACT_HYAP_PARAMS) $(CODELM_HYAP) $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(EXTRACT_HYAP_PARAMS) $< $@.tmp && mv $@.tmp $@

extract-hybrid-attnfirst-plain: $(EXTRACT_HYAP_NB) ## optional: the attention-first hybrid's ablation on the same prompts (no leave-one-out)
