# ---- the code-context dataset (issue 3) ------------------------------------------------------------------------
# Included by the main Makefile; uses its PY, ENV_STAMP, PAPERMILL, EXECUTED, DATASET_SRC.
DATASET_PARAMS := params/dataset/default.yaml
DATASET_DIR    := data/processed/context
DATASET        := $(DATASET_DIR)/manifest.json
# the local evaluation profile (the same completion points, fewer / shorter chunks: prompts the local LM was trained on)
DATASET_LOCAL_PARAMS := params/dataset/local.yaml
DATASET_LOCAL_DIR    := data/processed/context_local
DATASET_LOCAL        := $(DATASET_LOCAL_DIR)/manifest.json

.PHONY: dataset dataset-verify dataset-report bench-dataset

# The builder writes into a temporary directory and renames it at the end: a failed build leaves no manifest.
$(DATASET): $(DATASET_PARAMS) $(DATASET_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.context build -p $(DATASET_PARAMS) --out $(DATASET_DIR)

$(DATASET_LOCAL): $(DATASET_LOCAL_PARAMS) $(DATASET_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.context build -p $(DATASET_LOCAL_PARAMS) --out $(DATASET_LOCAL_DIR)

dataset: $(DATASET) $(DATASET_LOCAL) ## build the code-context dataset and its local profile offline (data/processed/context*/)

dataset-verify: $(DATASET) $(DATASET_LOCAL) ## re-verify the ground truth of every sample of both context datasets
	$(PY) -m deltalens.context verify $(DATASET_DIR)
	$(PY) -m deltalens.context verify $(DATASET_LOCAL_DIR)

$(EXECUTED)/00_context_dataset.ipynb: notebooks/00_context_dataset.ipynb $(DATASET_PARAMS) $(DATASET) $(REPORT_SRC) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(DATASET_PARAMS) $< $@.tmp && mv $@.tmp $@

dataset-report: $(EXECUTED)/00_context_dataset.ipynb ## statistics notebook of the context dataset (reports/executed/)

bench-dataset: | $(ENV_STAMP) ## time a fresh default dataset build -> reports/bench/dataset_build.json
	$(PY) -m deltalens.context build -p $(DATASET_PARAMS) --out data/interim/context_bench --no-progress \
	  --timing reports/bench/dataset_build.json
