# ---- the main analysis (issue 6) ------------------------------------------------------------------------------------
# Included by the main Makefile; uses PY, VENV, ENV_STAMP, PAPERMILL, EXECUTED, ANALYSIS_SRC, EXTRACT_NBS, CODELM_DEFAULT.
ANALYSIS_PARAMS := params/analysis/default.yaml
ANALYSIS_NB     := $(EXECUTED)/04_analysis.ipynb
RESULTS         := reports/analysis/results.md
# committed: written by make choose-default (below)
DEFAULT_CHOICE  := docs/context_reading/default_choice.json

.PHONY: analysis readme-results

$(ANALYSIS_NB): notebooks/04_analysis.ipynb $(ANALYSIS_PARAMS) $(EXTRACT_NBS) $(CODELM_DEFAULT) $(DEFAULT_CHOICE) $(EXECUTED)/02_label_context.ipynb $(LABELS_LOCAL_NB) $(ANALYSIS_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(ANALYSIS_PARAMS) $< $@.tmp && mv $@.tmp $@

$(RESULTS): $(ANALYSIS_NB)

reports/04_analysis.html: $(ANALYSIS_NB)
	$(VENV)/bin/jupyter nbconvert --to html --log-level WARN --output-dir reports --output 04_analysis $<

README.md: $(RESULTS)
	$(PY) -m deltalens.analysis.readme --readme README.md --results $(RESULTS)
	@touch README.md

analysis: reports/04_analysis.html README.md ## scores side by side, every ground truth, filtering curves -> reports/ (+ README results)

readme-results: README.md ## regenerate the README's results section from reports/analysis/results.md

# ---- optional: the analysis with the Mamba-2 twin next to the three Mamba-1 runs (NOT in `make all`) ----------------
# Notebook 04 with params/analysis/mamba2.yaml; its own outputs (reports/analysis-mamba2/,
# reports/figures/analysis-mamba2/), so the default analysis and the README's results are never overwritten.
ANALYSIS_M2_PARAMS := params/analysis/mamba2.yaml
ANALYSIS_M2_NB     := $(EXECUTED)/04_analysis-mamba2.ipynb
ANALYSIS_M2_HTML   := reports/analysis-mamba2/04_analysis.html

.PHONY: analysis-mamba2

$(ANALYSIS_M2_NB): notebooks/04_analysis.ipynb $(ANALYSIS_M2_PARAMS) $(EXTRACT_M1_NBS) $(EXTRACT_M2_NB) $(EXECUTED)/02_label_context.ipynb $(LABELS_LOCAL_NB) $(ANALYSIS_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(ANALYSIS_M2_PARAMS) $< $@.tmp && mv $@.tmp $@

$(ANALYSIS_M2_HTML): $(ANALYSIS_M2_NB)
	$(VENV)/bin/jupyter nbconvert --to html --log-level WARN --output-dir $(@D) --output 04_analysis $<

analysis-mamba2: $(ANALYSIS_M2_HTML) ## optional: notebook 04 with the Mamba-2 twin's Δ next to Mamba-1's -> reports/analysis-mamba2/

# ---- optional: the pure mimetic Mamba-2 next to the default model (issue 22; NOT in `make all`) -------------------------
ANALYSIS_M2M_PARAMS := params/analysis/mamba2-mimetic.yaml
ANALYSIS_M2M_NB     := $(EXECUTED)/04_analysis-mamba2-mimetic.ipynb
ANALYSIS_M2M_HTML   := reports/analysis-mamba2-mimetic/04_analysis.html

.PHONY: analysis-mamba2-mimetic

$(ANALYSIS_M2M_NB): notebooks/04_analysis.ipynb $(ANALYSIS_M2M_PARAMS) $(EXTRACT_M2M_NBS) $(EXECUTED)/03_extract_delta/code-lm-hybrid-attnfirst_context_first.ipynb $(EXECUTED)/02_label_context.ipynb $(LABELS_LOCAL_NB) $(ANALYSIS_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(ANALYSIS_M2M_PARAMS) $< $@.tmp && mv $@.tmp $@

$(ANALYSIS_M2M_HTML): $(ANALYSIS_M2M_NB)
	$(VENV)/bin/jupyter nbconvert --to html --log-level WARN --output-dir $(@D) --output 04_analysis $<

analysis-mamba2-mimetic: $(ANALYSIS_M2M_HTML) ## optional: notebook 04 on the pure mimetic Mamba-2 next to the default model -> reports/analysis-mamba2-mimetic/

# ---- optional: the pure mimetic Mamba-1 next to the default model (issue 22; NOT in `make all`) -------------------------
ANALYSIS_M1M_PARAMS := params/analysis/mamba1-mimetic.yaml
ANALYSIS_M1M_NB     := $(EXECUTED)/04_analysis-mamba1-mimetic.ipynb
ANALYSIS_M1M_HTML   := reports/analysis-mamba1-mimetic/04_analysis.html

.PHONY: analysis-mamba1-mimetic

$(ANALYSIS_M1M_NB): notebooks/04_analysis.ipynb $(ANALYSIS_M1M_PARAMS) $(EXTRACT_M1M_NBS) $(EXECUTED)/03_extract_delta/code-lm-hybrid-attnfirst_context_first.ipynb $(EXECUTED)/02_label_context.ipynb $(LABELS_LOCAL_NB) $(ANALYSIS_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(ANALYSIS_M1M_PARAMS) $< $@.tmp && mv $@.tmp $@

$(ANALYSIS_M1M_HTML): $(ANALYSIS_M1M_NB)
	$(VENV)/bin/jupyter nbconvert --to html --log-level WARN --output-dir $(@D) --output 04_analysis $<

analysis-mamba1-mimetic: $(ANALYSIS_M1M_HTML) ## optional: notebook 04 on the pure mimetic Mamba-1 next to the default model -> reports/analysis-mamba1-mimetic/

# ---- optional: the dev-split choice of the default model among the families (issue 22, item 4; NOT in `make all`) ----
# Each family's context-trained model on the dev split (mk/extract.mk's dev extractions; trains the models that are
# missing: ~45 min on 2 cores) and the default's own run; the rule is deltalens.analysis.default_choice's. Writes the
# committed record that notebook 04 shows and checks its model against.
CHOICE_FAMILIES := code-lm code-lm-mamba2 code-lm-hybrid-induction code-lm-mamba2-mimetic

.PHONY: choose-default

choose-default: $(foreach f,$(CHOICE_FAMILIES),$(call DEV_NB,$(f)_context_first)) $(EXECUTED)/03_extract_delta/code-lm-hybrid-attnfirst_context_first.ipynb | $(ENV_STAMP) ## optional: choose the default local model among the families on dev -> docs/context_reading/default_choice.json
	$(PY) -m deltalens.analysis.default_choice --dataset $(DATASET_LOCAL_DIR) --out $(DEFAULT_CHOICE) \
	  $(foreach f,$(CHOICE_FAMILIES),--candidate $(f)=data/processed/delta_dev/$(f)_context_first) \
	  --candidate code-lm-hybrid-attnfirst=data/processed/delta/code-lm-hybrid-attnfirst/context_first

# Add one family to the committed record without re-extracting the others (their rows are carried over by --keep):
# make choose-default-add ADD=code-lm-mamba2-mimetic
ADD ?=
.PHONY: choose-default-add

choose-default-add: $(if $(ADD),$(call DEV_NB,$(ADD)_context_first)) | $(ENV_STAMP) ## optional: add family ADD=<run> to the dev-split choice record (the others' rows kept)
	@test -n "$(ADD)" || { echo "choose-default-add: name the family, e.g. ADD=code-lm-mamba2-mimetic" >&2; exit 2; }
	$(PY) -m deltalens.analysis.default_choice --dataset $(DATASET_LOCAL_DIR) --out $(DEFAULT_CHOICE) \
	  --keep $(DEFAULT_CHOICE) --candidate $(ADD)=data/processed/delta_dev/$(ADD)_context_first
