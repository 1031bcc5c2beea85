# ---- the code-context dataset (issue 3) ------------------------------------------------------------------------
# Included by the main Makefile; uses its PY, ENV_STAMP, PAPERMILL, EXECUTED, LIB_SRC.
DATASET_PARAMS := params/dataset/default.yaml
DATASET_DIR    := data/processed/context
DATASET        := $(DATASET_DIR)/manifest.json

.PHONY: dataset dataset-verify dataset-report bench-dataset

# The builder writes into a temporary directory and renames it at the end: a failed build leaves no manifest.
$(DATASET): $(DATASET_PARAMS) $(LIB_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.context build -p $(DATASET_PARAMS) --out $(DATASET_DIR)

dataset: $(DATASET) ## build the code-context dataset offline (data/processed/context/: parquet + manifest)

dataset-verify: $(DATASET) ## re-verify the ground truth of every sample of the context dataset
	$(PY) -m deltalens.context verify $(DATASET_DIR)

$(EXECUTED)/00_context_dataset.ipynb: notebooks/00_context_dataset.ipynb $(DATASET_PARAMS) $(DATASET) | $(ENV_STAMP)
	@mkdir -p $(@D)
	$(PAPERMILL) -f $(DATASET_PARAMS) $< $@.tmp && mv $@.tmp $@

dataset-report: $(EXECUTED)/00_context_dataset.ipynb ## statistics notebook of the context dataset (reports/executed/)

bench-dataset: | $(ENV_STAMP) ## time a fresh default dataset build -> reports/bench/dataset_build.json
	$(PY) -m deltalens.context build -p $(DATASET_PARAMS) --out data/interim/context_bench --no-progress \
	  --timing reports/bench/dataset_build.json
