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
	$(PY) -m deltalens.report --readme README.md --results $(RESULTS)
	@touch README.md

analysis: reports/04_analysis.html README.md ## scores side by side, every ground truth, filtering curves -> reports/ (+ README results)

readme-results: README.md ## regenerate the README's results section from reports/analysis/results.md
