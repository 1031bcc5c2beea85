# ---- Δ from a pretrained Mamba LM per context chunk (issue 5) -----------------------------------------------------
# Included by the main Makefile; uses PY, ENV_STAMP, PAPERMILL, EXECUTED, EXTRACT_SRC, DATASET, CODELM_DEFAULT, CODELM_HYAP.
# One extraction per params/extract/<run>.yaml (model x prompt order). Extraction resumes sample by sample, so a rerun
# after a code change only recomputes what is missing (delete data/processed/delta/<run> to start over).
EXTRACT_PARAMS := $(sort $(wildcard params/extract/code-lm*.yaml))
EXTRACT_NAMES  := $(basename $(notdir $(EXTRACT_PARAMS)))
EXTRACT_NBS    := $(EXTRACT_NAMES:%=$(EXECUTED)/03_extract_delta/%.ipynb)
KAGGLE_PARAMS  := params/kaggle/falcon-mamba-7b.yaml
KAGGLE         ?= kaggle
KAGGLE_KERNEL  ?= $(KAGGLE_USERNAME)/deltalens-falcon-mamba-delta

.PHONY: extract kaggle kaggle-push kaggle-pull bench-extract clean-delta

$(EXECUTED)/03_extract_delta/%.ipynb: notebooks/03_extract_delta.ipynb params/extract/%.yaml $(CODELM_DEFAULT) $(CODELM_HYAP) $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f params/extract/$*.yaml $< $@.tmp && mv $@.tmp $@

extract: $(EXTRACT_NBS) ## Δ per context chunk from the default local code LM (both prompt orders) and its ablation (data/processed/delta/)

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

# ---- optional extractions (NOT in `make extract` / `make all`) ---------------------------------------------------------
# One per params/extract-optional/<run>.yaml -> $(EXECUTED)/03_extract_delta/<run>.ipynb, by the pattern rule below
# (tried after the one above, whose params/extract/<run>.yaml these runs do not have; the code-lm*.yaml wildcard
# above never picks them up); each run adds the model it reads (its config.json) as a prerequisite of its own.
OPTIONAL_NB = $(EXECUTED)/03_extract_delta/$(1).ipynb

$(EXECUTED)/03_extract_delta/%.ipynb: notebooks/03_extract_delta.ipynb params/extract-optional/%.yaml $(DATASET) $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f params/extract-optional/$*.yaml $< $@.tmp && mv $@.tmp $@

.PHONY: extract-mamba1 extract-mamba2 extract-hybrid extract-hybrid-induction extract-hybrid-plain extract-mamba2-mimetic extract-mamba1-mimetic

# the Mamba-2 twin (make code-lm-mamba2; its notebook is also an input of mk/analysis.mk's optional analysis)
EXTRACT_M2_NB := $(call OPTIONAL_NB,code-lm-mamba2_context_first)
$(EXTRACT_M2_NB): $(CODELM_M2)
extract-mamba2: $(EXTRACT_M2_NB) ## optional: Δ per head from the Mamba-2 twin, context first (data/processed/delta/code-lm-mamba2/)

# the hybrid code LM's Mamba-2 layers (make code-lm-hybrid)
$(call OPTIONAL_NB,code-lm-hybrid_context_first): $(CODELM_HY)
extract-hybrid: $(call OPTIONAL_NB,code-lm-hybrid_context_first) ## optional: Δ per head from the hybrid code LM's Mamba-2 layers, context first (data/processed/delta/code-lm-hybrid/)

# the induction-first hybrid (make code-lm-hybrid-induction)
$(call OPTIONAL_NB,code-lm-hybrid-induction_context_first): $(CODELM_HYI)
extract-hybrid-induction: $(call OPTIONAL_NB,code-lm-hybrid-induction_context_first) ## optional: Δ per head from the induction-first hybrid's Mamba-2 layers, context first

# the hybrids' context-blind ablation (make code-lm-hybrid-plain), its context gain on the same prompts
$(call OPTIONAL_NB,code-lm-hybrid-plain_context_first): $(CODELM_HY_PLAIN)
extract-hybrid-plain: $(call OPTIONAL_NB,code-lm-hybrid-plain_context_first) ## optional: the hybrids' context-blind ablation on the same prompts (no leave-one-out)

# the pure Mamba-2 with mimetic initialisation (make code-lm-mamba2-mimetic) and its ablation
EXTRACT_M2M_NBS := $(call OPTIONAL_NB,code-lm-mamba2-mimetic_context_first) \
                   $(call OPTIONAL_NB,code-lm-mamba2-mimetic-plain_context_first)
$(call OPTIONAL_NB,code-lm-mamba2-mimetic_context_first): $(CODELM_M2M)
$(call OPTIONAL_NB,code-lm-mamba2-mimetic-plain_context_first): $(CODELM_M2MP)
extract-mamba2-mimetic: $(EXTRACT_M2M_NBS) ## optional: Δ per head from the pure mimetic Mamba-2 code LM (context first, leave-one-out on every test sample) and its ablation

# the pure Mamba-1 with mimetic initialisation (make code-lm-mamba1-mimetic) and its ablation
EXTRACT_M1M_NBS := $(call OPTIONAL_NB,code-lm-mamba1-mimetic_context_first) \
                   $(call OPTIONAL_NB,code-lm-mamba1-mimetic-plain_context_first)
$(call OPTIONAL_NB,code-lm-mamba1-mimetic_context_first): $(CODELM_M1M)
$(call OPTIONAL_NB,code-lm-mamba1-mimetic-plain_context_first): $(CODELM_M1MP)
extract-mamba1-mimetic: $(EXTRACT_M1M_NBS) ## optional: Δ from the pure mimetic Mamba-1 code LM (context first, leave-one-out on every test sample) and its ablation

# the Mamba-1 code LM (make code-lm: the default until issue 22 round 4), both prompt orders, and its ablation
EXTRACT_M1_NBS := $(call OPTIONAL_NB,code-lm_context_first) $(call OPTIONAL_NB,code-lm_query_first) \
                  $(call OPTIONAL_NB,code-lm-plain_context_first)
$(EXTRACT_M1_NBS): $(CODELM) $(CODELM_PLAIN)
extract-mamba1: $(EXTRACT_M1_NBS) ## optional: Δ from the Mamba-1 code LM (both orders, leave-one-out on 120 test samples) and its ablation

# ---- dev-split extractions of every family's context-trained model: the choice of the default (issue 22, item 4) -----
# One per params/extract-optional/<run>.yaml, on the dev split only and without leave-one-out (the choice reads the
# context gain only), into data/processed/delta_dev/<run>/; the default model's own dev samples are in its make-extract
# run. Optional, NOT in `make all`: it trains every family (make choose-default in mk/analysis.mk).
DEV_NB = $(EXECUTED)/03_extract_delta_dev/$(1).ipynb

$(EXECUTED)/03_extract_delta_dev/%.ipynb: notebooks/03_extract_delta.ipynb params/extract-optional/%.yaml $(DATASET_LOCAL) $(EXTRACT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f params/extract-optional/$*.yaml -p split dev -p leave_one_out False -p hidden_attention 0 \
	  -p out_dir data/processed/delta_dev/$* -p figures_dir reports/figures/delta_dev/$* $< $@.tmp && mv $@.tmp $@

$(call DEV_NB,code-lm_context_first): $(CODELM)
$(call DEV_NB,code-lm-mamba2_context_first): $(CODELM_M2)
$(call DEV_NB,code-lm-hybrid_context_first): $(CODELM_HY)
$(call DEV_NB,code-lm-hybrid-induction_context_first): $(CODELM_HYI)
$(call DEV_NB,code-lm-mamba2-mimetic_context_first): $(CODELM_M2M)
$(call DEV_NB,code-lm-mamba1-mimetic_context_first): $(CODELM_M1M)
