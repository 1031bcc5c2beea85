# ---- the main analysis (issue 6) ------------------------------------------------------------------------------------
# Included by the main Makefile; uses PY, VENV, ENV_STAMP, PAPERMILL, EXECUTED, ANALYSIS_SRC, EXTRACT_NBS.
ANALYSIS_PARAMS := params/analysis/default.yaml
ANALYSIS_NB     := $(EXECUTED)/04_analysis.ipynb
RESULTS         := reports/analysis/results.md

.PHONY: analysis readme-results

$(ANALYSIS_NB): notebooks/04_analysis.ipynb $(ANALYSIS_PARAMS) $(EXTRACT_NBS) $(EXECUTED)/02_label_context.ipynb $(LABELS_LOCAL_NB) $(ANALYSIS_SRC) | $(ENV_STAMP)
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

# ---- optional: the analysis with the Mamba-2 twin next to the three default runs (NOT in `make all`) -----------------
# Notebook 04 with params/analysis/mamba2.yaml; its own outputs (reports/analysis-mamba2/,
# reports/figures/analysis-mamba2/), so the default analysis and the README's results are never overwritten.
ANALYSIS_M2_PARAMS := params/analysis/mamba2.yaml
ANALYSIS_M2_NB     := $(EXECUTED)/04_analysis-mamba2.ipynb
ANALYSIS_M2_HTML   := reports/analysis-mamba2/04_analysis.html

.PHONY: analysis-mamba2

$(ANALYSIS_M2_NB): notebooks/04_analysis.ipynb $(ANALYSIS_M2_PARAMS) $(EXTRACT_NBS) $(EXTRACT_M2_NB) $(EXECUTED)/02_label_context.ipynb $(LABELS_LOCAL_NB) $(ANALYSIS_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(ANALYSIS_M2_PARAMS) $< $@.tmp && mv $@.tmp $@

$(ANALYSIS_M2_HTML): $(ANALYSIS_M2_NB)
	$(VENV)/bin/jupyter nbconvert --to html --log-level WARN --output-dir $(@D) --output 04_analysis $<

analysis-mamba2: $(ANALYSIS_M2_HTML) ## optional: notebook 04 with the Mamba-2 twin's Δ next to Mamba-1's -> reports/analysis-mamba2/
