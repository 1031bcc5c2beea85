# ---- the local code LMs (Δ extraction over code-completion prompts) ---------------------------------------------------
# Included by the main Makefile; uses its PY, ENV_STAMP, CODELM_SRC.
# Corpus: the Python standard library, never the dataset's projects (params/dataset/default.yaml sources.installed).
# The trainer writes into a temporary directory and renames it at the end; with identical parameters and corpus it
# reuses the existing model (and touches config.json), so a change elsewhere in lib/ does not retrain.
#
# The DEFAULT model of `make all` (issue 22, item 6) is the attention-first hybrid, the one local family that reads its
# context (chosen on the dev split: docs/context_reading/default_choice.json). Its two training stages take ~41 min of
# two cores, more than make all's budget, so make all reads the committed checkpoint models/code-lm-hybrid-attnfirst/
# after checking every file's sha256 (the stamp below); `make code-lm-hybrid-attnfirst` retrains it from scratch into
# data/models/. Its context-blind ablation (code-lm-hybrid-attnfirst-plain, ~9 min) is trained by make all.
CODELM_DEFAULT_DIR := models/code-lm-hybrid-attnfirst
CODELM_DEFAULT     := data/models/.verified/code-lm-hybrid-attnfirst.json
# the corpus.exclude_dataset_params of the recipes: a change of the dataset's projects changes the corpus
CODELM_EXCLUDE := params/dataset/default.yaml

.PHONY: code-lm-default

$(CODELM_DEFAULT): $(wildcard $(CODELM_DEFAULT_DIR)/*) lib/deltalens/codelm/committed.py | $(ENV_STAMP)
	$(PY) -m deltalens.codelm verify $(CODELM_DEFAULT_DIR) --stamp $@


# ---- the Mamba-1 code LM (the first design; optional since issue 22 round 4, NOT in `make all`) -----------------------
CODELM_PARAMS := params/codelm/default.yaml
CODELM_DIR    := data/models/code-lm
CODELM        := $(CODELM_DIR)/config.json
# the plain, context-blind code LM: the ablation, and the model the default one continues (init_from)
CODELM_PLAIN_PARAMS := params/codelm/plain.yaml
CODELM_PLAIN_DIR    := data/models/code-lm-plain
CODELM_PLAIN        := $(CODELM_PLAIN_DIR)/config.json

.PHONY: code-lm code-lm-plain code-lm-smoke

$(CODELM_PLAIN): $(CODELM_PLAIN_PARAMS) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_PLAIN_PARAMS) --out $(CODELM_PLAIN_DIR)

$(CODELM): $(CODELM_PARAMS) $(CODELM_PLAIN) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_PARAMS) --out $(CODELM_DIR)

code-lm-plain: $(CODELM_PLAIN) ## optional: the plain (context-blind) Mamba-1 code LM on CPU (data/models/code-lm-plain/)

code-lm: $(CODELM) ## optional: the Mamba-1 code LM continued on prompts (~15 min with code-lm-plain; it does not read them)

code-lm-smoke: | $(ENV_STAMP) ## tiny code LM in seconds (data/models/code-lm-smoke/) to try the extraction path
	$(PY) -m deltalens.codelm train -p params/codelm/smoke.yaml --out data/models/code-lm-smoke

# ---- the Mamba-2 twin (issue 14; optional, NOT in `make all`: over its 60-minute budget) ---------------------------------
# transformers' Mamba2ForCausalLM trained by the same recipe, data and steps as the two Mamba-1 stages above
# (params/codelm/mamba2-plain.yaml, then params/codelm/mamba2.yaml continues it), for Δ side by side (make
# extract-mamba2 analysis-mamba2).
CODELM_M2_PLAIN_PARAMS := params/codelm/mamba2-plain.yaml
CODELM_M2_PLAIN_DIR    := data/models/code-lm-mamba2-plain
CODELM_M2_PLAIN        := $(CODELM_M2_PLAIN_DIR)/config.json
CODELM_M2_PARAMS       := params/codelm/mamba2.yaml
CODELM_M2_DIR          := data/models/code-lm-mamba2
CODELM_M2              := $(CODELM_M2_DIR)/config.json

.PHONY: code-lm-mamba2 code-lm-mamba2-plain

$(CODELM_M2_PLAIN): $(CODELM_M2_PLAIN_PARAMS) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_M2_PLAIN_PARAMS) --out $(CODELM_M2_PLAIN_DIR)

$(CODELM_M2): $(CODELM_M2_PARAMS) $(CODELM_M2_PLAIN) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_M2_PARAMS) --out $(CODELM_M2_DIR)

code-lm-mamba2-plain: $(CODELM_M2_PLAIN) ## optional: the Mamba-2 twin of code-lm-plain (data/models/code-lm-mamba2-plain/)

code-lm-mamba2: $(CODELM_M2) ## optional: the Mamba-2 twin of code-lm, both stages (data/models/code-lm-mamba2/; not in all)

# ---- the hybrid code LM and the copying curriculum (issue 22; optional, NOT in `make all`) -------------------------------
# transformers' BambaForCausalLM (Mamba-2 layers + two attention layers): hybrid-plain is its context-blind ablation
# (plain code windows, the recipe of plain.yaml), hybrid continues it on the copying curriculum (renamed identifiers,
# repeated spans, identifier pairs, annealed toward plain prompts). make code-lm-bundle writes the training data as
# files for a run on another machine (bench/gpu_train_codelm.sh on a lent GPU).
CODELM_HY_PLAIN_PARAMS := params/codelm/hybrid-plain.yaml
CODELM_HY_PLAIN_DIR    := data/models/code-lm-hybrid-plain
CODELM_HY_PLAIN        := $(CODELM_HY_PLAIN_DIR)/config.json
CODELM_HY_PARAMS       := params/codelm/hybrid.yaml
CODELM_HY_DIR          := data/models/code-lm-hybrid
CODELM_HY              := $(CODELM_HY_DIR)/config.json

.PHONY: code-lm-hybrid code-lm-hybrid-plain code-lm-bundle

$(CODELM_HY_PLAIN): $(CODELM_HY_PLAIN_PARAMS) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_HY_PLAIN_PARAMS) --out $(CODELM_HY_PLAIN_DIR)

$(CODELM_HY): $(CODELM_HY_PARAMS) $(CODELM_HY_PLAIN) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_HY_PARAMS) --out $(CODELM_HY_DIR)

code-lm-hybrid-plain: $(CODELM_HY_PLAIN) ## optional: the hybrid (Mamba-2 + attention) code LM's context-blind ablation
code-lm-hybrid: $(CODELM_HY) ## optional: the hybrid code LM on the copying curriculum (continues code-lm-hybrid-plain)

# the induction-first recipe (the design change after hybrid.yaml): the same hybrid-plain start, the same curriculum plus
# repeated random-token spans, six times the steps (~55 min on 2 cores: over make all's budget, hence optional)
CODELM_HYI_PARAMS := params/codelm/hybrid-induction.yaml
CODELM_HYI_DIR    := data/models/code-lm-hybrid-induction
CODELM_HYI        := $(CODELM_HYI_DIR)/config.json

.PHONY: code-lm-hybrid-induction

$(CODELM_HYI): $(CODELM_HYI_PARAMS) $(CODELM_HY_PLAIN) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_HYI_PARAMS) --out $(CODELM_HYI_DIR)

code-lm-hybrid-induction: $(CODELM_HYI) ## optional: the hybrid code LM, induction-first curriculum (~55 min; continues code-lm-hybrid-plain)

# the induction warm-up: hybrid-plain continued on short sequences of repeated random-token spans (~25 min)
CODELM_HYW_PARAMS := params/codelm/hybrid-induction-warm.yaml
CODELM_HYW_DIR    := data/models/code-lm-hybrid-induction-warm
CODELM_HYW        := $(CODELM_HYW_DIR)/config.json

.PHONY: code-lm-hybrid-induction-warm

$(CODELM_HYW): $(CODELM_HYW_PARAMS) $(CODELM_HY_PLAIN) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_HYW_PARAMS) --out $(CODELM_HYW_DIR)

code-lm-hybrid-induction-warm: $(CODELM_HYW) ## optional: the hybrid's induction warm-up on repeated random-token spans (~25 min)

# the attention-first hybrid (issue 22 round 4): attention at layers 0 and 1, Mamba-2 after; stage 1 from scratch on
# repeated random-token spans at 256 tokens (~27 min on 2 cores), stage 2 on the prompt curriculum at 1,024 (~25 min)
CODELM_HYAW_PARAMS := params/codelm/hybrid-attnfirst-warm.yaml
CODELM_HYAW_DIR    := data/models/code-lm-hybrid-attnfirst-warm
CODELM_HYAW        := $(CODELM_HYAW_DIR)/config.json
CODELM_HYA_PARAMS  := params/codelm/hybrid-attnfirst.yaml
CODELM_HYA_DIR     := data/models/code-lm-hybrid-attnfirst
CODELM_HYA         := $(CODELM_HYA_DIR)/config.json

.PHONY: code-lm-hybrid-attnfirst-warm code-lm-hybrid-attnfirst

$(CODELM_HYAW): $(CODELM_HYAW_PARAMS) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_HYAW_PARAMS) --out $(CODELM_HYAW_DIR)

$(CODELM_HYA): $(CODELM_HYA_PARAMS) $(CODELM_HYAW) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_HYA_PARAMS) --out $(CODELM_HYA_DIR)

CODELM_HYAP_PARAMS := params/codelm/hybrid-attnfirst-plain.yaml
CODELM_HYAP_DIR    := data/models/code-lm-hybrid-attnfirst-plain
CODELM_HYAP        := $(CODELM_HYAP_DIR)/config.json

.PHONY: code-lm-hybrid-attnfirst-plain

$(CODELM_HYAP): $(CODELM_HYAP_PARAMS) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_HYAP_PARAMS) --out $(CODELM_HYAP_DIR)

code-lm-hybrid-attnfirst-plain: $(CODELM_HYAP) ## optional: the attention-first hybrid's context-blind ablation (plain code windows, ~5 min)
code-lm-hybrid-attnfirst-warm: $(CODELM_HYAW) ## optional: the attention-first hybrid, stage 1: from scratch on repeated random spans (~27 min)
code-lm-hybrid-attnfirst: $(CODELM_HYA) ## optional: the attention-first hybrid, stage 2: the prompt curriculum (~25 min; continues stage 1)

# the pure Mamba-2 with mimetic initialisation (issue 22, item 3): the attention-first hybrid's two stages on a pure
# Mamba-2 (state 128) whose mixers start close to linear attention (model.init: mimetic); one CPU thread
CODELM_M2MW_PARAMS := params/codelm/mamba2-mimetic-warm.yaml
CODELM_M2MW_DIR    := data/models/code-lm-mamba2-mimetic-warm
CODELM_M2MW        := $(CODELM_M2MW_DIR)/config.json
CODELM_M2M_PARAMS  := params/codelm/mamba2-mimetic.yaml
CODELM_M2M_DIR     := data/models/code-lm-mamba2-mimetic
CODELM_M2M         := $(CODELM_M2M_DIR)/config.json

.PHONY: code-lm-mamba2-mimetic-warm code-lm-mamba2-mimetic

$(CODELM_M2MW): $(CODELM_M2MW_PARAMS) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_M2MW_PARAMS) --out $(CODELM_M2MW_DIR)

$(CODELM_M2M): $(CODELM_M2M_PARAMS) $(CODELM_M2MW) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_M2M_PARAMS) --out $(CODELM_M2M_DIR)

CODELM_M2MP_PARAMS := params/codelm/mamba2-mimetic-plain.yaml
CODELM_M2MP_DIR    := data/models/code-lm-mamba2-mimetic-plain
CODELM_M2MP        := $(CODELM_M2MP_DIR)/config.json

.PHONY: code-lm-mamba2-mimetic-plain

$(CODELM_M2MP): $(CODELM_M2MP_PARAMS) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_M2MP_PARAMS) --out $(CODELM_M2MP_DIR)

code-lm-mamba2-mimetic-plain: $(CODELM_M2MP) ## optional: the pure mimetic Mamba-2's context-blind ablation (plain code windows)
code-lm-mamba2-mimetic-warm: $(CODELM_M2MW) ## optional: pure Mamba-2, mimetic init, stage 1: from scratch on repeated random spans
code-lm-mamba2-mimetic: $(CODELM_M2M) ## optional: pure Mamba-2, mimetic init, stage 2: the prompt curriculum (continues stage 1)

# the pure Mamba-1 with mimetic initialisation (issue 22, item 3: Mamba-1 with a larger d_state): the same two stages
# and ablation on the project's mambapy Mamba-1 (d_state 64). Hours on 2 CPU cores (README part 3): a lent GPU's recipe
# (bench/gpu_train_codelm.sh RECIPE=mimetic), kept here so the CPU can retrain it with the same trainer
CODELM_M1MW_PARAMS := params/codelm/mamba1-mimetic-warm.yaml
CODELM_M1MW_DIR    := data/models/code-lm-mamba1-mimetic-warm
CODELM_M1MW        := $(CODELM_M1MW_DIR)/config.json
CODELM_M1M_PARAMS  := params/codelm/mamba1-mimetic.yaml
CODELM_M1M_DIR     := data/models/code-lm-mamba1-mimetic
CODELM_M1M         := $(CODELM_M1M_DIR)/config.json
CODELM_M1MP_PARAMS := params/codelm/mamba1-mimetic-plain.yaml
CODELM_M1MP_DIR    := data/models/code-lm-mamba1-mimetic-plain
CODELM_M1MP        := $(CODELM_M1MP_DIR)/config.json

.PHONY: code-lm-mamba1-mimetic-warm code-lm-mamba1-mimetic code-lm-mamba1-mimetic-plain

$(CODELM_M1MW): $(CODELM_M1MW_PARAMS) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_M1MW_PARAMS) --out $(CODELM_M1MW_DIR)

$(CODELM_M1M): $(CODELM_M1M_PARAMS) $(CODELM_M1MW) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_M1M_PARAMS) --out $(CODELM_M1M_DIR)

$(CODELM_M1MP): $(CODELM_M1MP_PARAMS) $(CODELM_EXCLUDE) $(CODELM_SRC) | $(ENV_STAMP)
	$(PY) -m deltalens.codelm train -p $(CODELM_M1MP_PARAMS) --out $(CODELM_M1MP_DIR)

code-lm-mamba1-mimetic-plain: $(CODELM_M1MP) ## optional: the pure mimetic Mamba-1's context-blind ablation (plain code windows; hours on a CPU)
code-lm-mamba1-mimetic-warm: $(CODELM_M1MW) ## optional: pure Mamba-1 (d_state 64), mimetic init, stage 1: repeated random spans (hours on a CPU)
code-lm-mamba1-mimetic: $(CODELM_M1M) ## optional: pure Mamba-1, mimetic init, stage 2: the prompt curriculum (continues stage 1; hours on a CPU)

# (after CODELM_HYAP's definition: prerequisites expand when make reads the rule)
code-lm-default: $(CODELM_DEFAULT) $(CODELM_HYAP) ## the default local LM: the committed checkpoint, hash-checked; its ablation trained (CPU)

code-lm-bundle: | $(ENV_STAMP) ## the training data of the hybrid recipes as files (data/interim/codelm_bundle*/) for a GPU run
	$(PY) -m deltalens.codelm bundle -p $(CODELM_HY_PLAIN_PARAMS) --out data/interim/codelm_bundle_plain
	$(PY) -m deltalens.codelm bundle -p $(CODELM_HY_PARAMS) --out data/interim/codelm_bundle_context
	$(PY) -m deltalens.codelm bundle -p $(CODELM_HYW_PARAMS) --out data/interim/codelm_bundle_warm
	$(PY) -m deltalens.codelm bundle -p $(CODELM_HYAW_PARAMS) --out data/interim/codelm_bundle_attnfirst_warm
