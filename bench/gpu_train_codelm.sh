#!/bin/bash
# One call on a bare, offline GPU machine (the lent `device`): train the copying-curriculum code LMs of issue 22 with
# the project's own trainer on CUDA, from data bundles made here (the device's Python has another standard library
# and other distributions, so the data travel as files), each model folder written into $OUT as soon as it is done.
# Needs, carried from the checkout:
#   .whl/                         pip download --no-deps --only-binary=:all: --python-version 3.12
#                                 --platform manylinux_2_17_x86_64 -d .whl mambapy==1.2.0 transformers==5.24.0
#                                 tokenizers==0.23.3 safetensors==0.8.0
#   data/interim/codelm_bundle_plain, data/interim/codelm_bundle_context, data/interim/codelm_bundle_warm,
#   data/interim/codelm_bundle_attnfirst_warm
#                                 (make code-lm-bundle; the warm-ups' prompts section differs: no prompts drawn)
# Usage there:   OUT=/some/dir bash bench/gpu_train_codelm.sh [family ...]      (default: hybrid mamba2 mamba1)
#   RECIPE=induction: between the ablation and the curriculum run, the induction warm-up stage
#   (params/codelm/hybrid-induction-warm.yaml: short sequences of repeated random-token spans), then
#   params/codelm/hybrid-induction.yaml instead of hybrid.yaml (WARM_STEPS steps of the warm-up)
#   RECIPE=attnfirst (hybrid only): the attention-first hybrid (attention at layers 0 and 1, Mamba-2 after): its
#   ablation (params/codelm/hybrid-attnfirst-plain.yaml), stage 1 from scratch on 64-token repeated random spans
#   (params/codelm/hybrid-attnfirst-warm.yaml, WARM_STEPS; batch 64 x 4 BATCH / 16), stage 2 the prompt curriculum
#   (params/codelm/hybrid-attnfirst.yaml, CONTEXT_STEPS)
#   RECIPE=mimetic (families mamba1, mamba2; the default both): the pure SSMs with mimetic init, exactly as
#   params/codelm/<family>-mimetic-plain.yaml / -mimetic-warm.yaml / -mimetic.yaml say (their own model, steps and
#   batches: only train.device and the MINUTES guard change), so a checkpoint made here is the CPU recipe's function
# Rehearsal here (CPU, tiny steps): TINY=1 OUT=/tmp/x PATH=.venv/bin:$PATH bash bench/gpu_train_codelm.sh hybrid
# Every family is trained twice: its context-blind ablation (plain code windows) and, continuing it, the curriculum
# run; the model shape is params/codelm/hybrid*.yaml's, changed per family by the overrides below. Steps and batch
# are the GPU recipe's (PLAIN_STEPS / CONTEXT_STEPS / BATCH); a time guard (MINUTES per run) is reported in
# training.json (stopped_by), never silent.
set -u
: "${OUT:?set OUT to the folder for the results}"
mkdir -p "$OUT"
PLAIN_STEPS=${PLAIN_STEPS:-3000}; CONTEXT_STEPS=${CONTEXT_STEPS:-3000}; BATCH=${BATCH:-16}; MINUTES=${MINUTES:-4}
RECIPE=${RECIPE:-curriculum}; WARM_STEPS=${WARM_STEPS:-3000}; PLAIN_PARAMS=params/codelm/hybrid-plain.yaml
case "$RECIPE" in
  curriculum) CONTEXT_PARAMS=params/codelm/hybrid.yaml ;;
  induction) CONTEXT_PARAMS=params/codelm/hybrid-induction.yaml ;;
  attnfirst) CONTEXT_PARAMS=params/codelm/hybrid-attnfirst.yaml; PLAIN_PARAMS=params/codelm/hybrid-attnfirst-plain.yaml ;;
  mimetic) CONTEXT_PARAMS=; PLAIN_PARAMS= ;;  # per family, below
  *) echo "unknown RECIPE=$RECIPE (allowed: curriculum, induction, attnfirst, mimetic)" >&2; exit 1 ;;
esac
if [ -n "${TINY:-}" ]; then  # a rehearsal on the CPU: the same commands, two steps each
  device=cpu; PLAIN_STEPS=2; CONTEXT_STEPS=2; WARM_STEPS=2; BATCH=4; MINUTES=2
  export PYTHONPATH=lib
else
  pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -2
  export PYTHONPATH=/tmp/site:lib
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
  device=cuda
fi
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"

family_overrides() {  # the model section per family (the hybrid is the params files' own model)
  if [ "$RECIPE" = attnfirst ]; then  # the attention-first shape of params/codelm/hybrid-attnfirst*.yaml
    [ "$1" = hybrid ] || { echo "RECIPE=attnfirst trains the hybrid only, not $1" >&2; return 1; }
    echo "--set model.d_model=128 --set model.attn_layers=[0,1] --set model.intermediate_size=256 --set model.chunk_size=64"
    return 0
  fi
  case "$1" in
    hybrid) echo "" ;;
    mamba2) echo "--set model.arch=mamba2 --set model.d_state=128 --set model.attn_layers=null --set model.n_attention_heads=null --set model.intermediate_size=null" ;;
    mamba1) echo "--set model.arch=mamba1 --set model.d_state=64 --set model.attn_layers=null --set model.n_attention_heads=null --set model.intermediate_size=null --set model.head_dim=null --set model.n_groups=null --set model.chunk_size=null" ;;
    attention) echo "--set model.arch=attention --set model.attn_layers=null --set model.head_dim=null --set model.n_groups=null --set model.chunk_size=null" ;;
    *) echo "unknown family $1" >&2; return 1 ;;
  esac
}

trained() {  # a stage that failed is said loudly in the summary (the next stages still run)
  [ -f "$1/config.json" ] || echo "FAILED: $1 was not trained (see $2)" | tee -a "$OUT/summary.txt"
}
summarize() {  # a trained model's line in the summary: steps, stop, device, held-out loss and context gain, curve
  [ -f "$1/training.json" ] || return 0
  python - "$1" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
m = json.load(open(sys.argv[1] + "/training.json"))
g = (m.get("context") or {}).get("held_out_gain") or {}
curve = [(r["step"], r.get("held_out_context_gain")) for r in m["curve"] if "held_out_context_gain" in r]
print(sys.argv[1], m["model"]["architecture"], m["train"]["steps"], "steps", m["train"]["stopped_by"],
      m["train"]["device_name"], f"{m['train']['seconds']:.0f} s", "held-out loss", round(m["held_out"]["loss"], 3),
      "held-out context gain", g.get("context_gain"), "curve", curve)
EOF
}
families=("$@")
if [ "$RECIPE" = mimetic ]; then
  [ ${#families[@]} -eq 0 ] && families=(mamba1 mamba2)
  mcommon="--set train.device=$device --set train.max_minutes=$MINUTES --no-progress"
  # the rehearsal: two steps of four sequences per stage (the recipe itself otherwise)
  [ -n "${TINY:-}" ] && mcommon="$mcommon --set train.max_steps=2 --set train.batch_size=4 --set train.micro_batch_size=4"
  for f in "${families[@]}"; do
    case "$f" in mamba1|mamba2) ;; *) echo "RECIPE=mimetic trains mamba1 / mamba2, not $f" >&2; exit 1 ;; esac
    for stage in plain warm context; do
      case "$stage" in
        plain) params=params/codelm/$f-mimetic-plain.yaml; bundle=data/interim/codelm_bundle_plain
               out="$OUT/code-lm-$f-mimetic-plain"; init="" ;;
        warm) params=params/codelm/$f-mimetic-warm.yaml; bundle=data/interim/codelm_bundle_attnfirst_warm
              out="$OUT/code-lm-$f-mimetic-warm"; init="" ;;
        context) params=params/codelm/$f-mimetic.yaml; bundle=data/interim/codelm_bundle_context
                 out="$OUT/code-lm-$f-mimetic"; init="--set init_from=$OUT/code-lm-$f-mimetic-warm" ;;
      esac
      # shellcheck disable=SC2086
      python -m deltalens.codelm train -p "$params" --bundle "$bundle" --out "$out" $init $mcommon 2>&1 \
        | tee "$OUT/$f-mimetic-$stage.log" | tail -3
      trained "$out" "$OUT/$f-mimetic-$stage.log"
      summarize "$out"
    done
  done
  exit 0
fi
[ ${#families[@]} -eq 0 ] && families=(hybrid mamba2 mamba1)
common="--set train.device=$device --set train.batch_size=$BATCH --set train.max_minutes=$MINUTES --set train.eval_every=500 --no-progress"
# the attention-first recipes stack equal-length sequences into one forward: the whole batch at once
[ "$RECIPE" = attnfirst ] && common="$common --set train.micro_batch_size=$BATCH"
for f in "${families[@]}"; do
  over=$(family_overrides "$f") || exit 1
  plain="$OUT/code-lm-$f-plain"; ctx="$OUT/code-lm-$f"
  # shellcheck disable=SC2086
  python -m deltalens.codelm train -p "$PLAIN_PARAMS" --bundle data/interim/codelm_bundle_plain \
    --out "$plain" $over $common --set train.max_steps=$PLAIN_STEPS 2>&1 | tee "$OUT/$f-plain.log" | tail -3
  trained "$plain" "$OUT/$f-plain.log"
  start="$plain"
  if [ "$RECIPE" = attnfirst ]; then  # stage 1 trains from scratch (the ablation above is its plain-code twin)
    start="$OUT/code-lm-$f-attnfirst-warm"
    python -m deltalens.codelm train -p params/codelm/hybrid-attnfirst-warm.yaml \
      --bundle data/interim/codelm_bundle_attnfirst_warm --out "$start" $common \
      --set train.batch_size=$((BATCH * 4)) --set train.micro_batch_size=$((BATCH * 4)) \
      --set train.max_steps=$WARM_STEPS 2>&1 | tee "$OUT/$f-attnfirst-warm.log" | tail -3
    trained "$start" "$OUT/$f-attnfirst-warm.log"
  fi
  if [ "$RECIPE" = induction ]; then
    start="$OUT/code-lm-$f-induction-warm"
    # shellcheck disable=SC2086
    python -m deltalens.codelm train -p params/codelm/hybrid-induction-warm.yaml \
      --bundle data/interim/codelm_bundle_warm --out "$start" --set init_from="$plain" $over $common \
      --set train.batch_size=$((BATCH * 4)) --set train.max_steps=$WARM_STEPS 2>&1 | tee "$OUT/$f-warm.log" | tail -3
    trained "$start" "$OUT/$f-warm.log"
  fi
  # shellcheck disable=SC2086
  python -m deltalens.codelm train -p "$CONTEXT_PARAMS" --bundle data/interim/codelm_bundle_context \
    --out "$ctx" --set init_from="$start" $over $common --set train.max_steps=$CONTEXT_STEPS 2>&1 \
    | tee "$OUT/$f.log" | tail -3
  trained "$ctx" "$OUT/$f.log"
  summarize "$ctx"
done
