# ---- the local default code LM (Δ extraction over code-completion prompts) ----------------------------------------------
# Included by the main Makefile; uses its PY, ENV_STAMP, LIB_SRC.
# Corpus: the Python standard library, never the dataset's projects (params/dataset/default.yaml sources.installed).
# The trainer writes into a temporary directory and renames it at the end; with identical parameters and corpus it
# reuses the existing model (and touches config.json), so a change elsewhere in lib/ does not retrain.
CODELM_PARAMS := params/codelm/default.yaml
CODELM_DIR    := data/models/code-lm
CODELM        := $(CODELM_DIR)/config.json
# the corpus.exclude_dataset_params of the default params: a change of the dataset's projects changes the corpus
CODELM_EXCLUDE := params/dataset/default.yaml

.PHONY: code-lm code-lm-smoke

$(CODELM): $(CODELM_PARAMS) $(CODELM_EXCLUDE) $(LIB_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_PARAMS) --out $(CODELM_DIR)

code-lm: $(CODELM) ## train the local code LM on CPU (<= 15 min; data/models/code-lm/: transformers Mamba + tokenizer)

code-lm-smoke: | $(ENV_STAMP) ## tiny code LM in seconds (data/models/code-lm-smoke/) to try the extraction path
	$(PY) -m deltalens.codelm train -p params/codelm/smoke.yaml --out data/models/code-lm-smoke
