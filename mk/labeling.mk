# ---- labeling context relevance with LLMs (issue 4) ---------------------------------------------------------------
# Included by the main Makefile; uses PY, ENV_STAMP, PAPERMILL, EXECUTED, LABELING_SRC, DATASET.
LABEL_PARAMS    := params/labeling/default.yaml
LABEL_ENDPOINTS := data/interim/labels/endpoints.json
LABELS          := data/processed/labels/labels.parquet
LABEL_LOCAL_PARAMS := params/labeling/local.yaml
LABELS_LOCAL_NB    := $(EXECUTED)/02_label_context_local.ipynb

.PHONY: labeling label-export FORCE
FORCE:

# Rewritten only when the set of configured labelers changes (names, models, answers files; never keys): exporting
# DEEPSEEK_API_KEY (or DELTALENS_LLM_*, DELTALENS_HF_MODEL, an answers file) re-runs the notebook; nothing else does.
$(LABEL_ENDPOINTS): FORCE | $(ENV_STAMP)
	@$(PY) -m deltalens.labeling endpoints -p $(LABEL_PARAMS) --out $@

$(EXECUTED)/02_label_context.ipynb: notebooks/02_label_context.ipynb $(LABEL_PARAMS) $(DATASET) $(LABEL_ENDPOINTS) $(LABELING_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(LABEL_PARAMS) $< $@.tmp && mv $@.tmp $@

$(LABELS): $(EXECUTED)/02_label_context.ipynb

# the reference scores of the local evaluation profile (the baselines of the local LM's analysis)
$(LABELS_LOCAL_NB): notebooks/02_label_context.ipynb $(LABEL_LOCAL_PARAMS) $(DATASET_LOCAL) $(LABELING_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(LABEL_LOCAL_PARAMS) $< $@.tmp && mv $@.tmp $@

labeling: $(EXECUTED)/02_label_context.ipynb $(LABELS_LOCAL_NB) ## label context chunks (reference + every configured LLM), measure label quality

label-export: $(DATASET) | $(ENV_STAMP) ## export labeling prompts for the manual chat-window workflow
	$(PY) -m deltalens.labeling export -p $(LABEL_PARAMS)
