#!/bin/bash
# One call on a bare, offline GPU machine (the lent `device`): install the carried wheels, then run the GPU scale
# benchmark on Codestral Mamba's shape (Mamba-2) and on falcon-mamba-7b's (Mamba-1), each writing its JSON after
# every step into $OUT, so a call cut short keeps what it measured. Needs, carried from the checkout:
#   .whl/  (pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64
#           -d .whl mambapy==1.2.0 transformers==5.24.0 tokenizers safetensors)
#   data/processed/context  (make dataset)
# Usage there:  OUT=/some/dir bash bench/gpu_device_run.sh [shape ...]   (default: mamba-codestral-7b falcon-mamba-7b)
# Rehearsal here: TINY=1 OUT=/tmp/x PATH=.venv/bin:$PATH bash bench/gpu_device_run.sh
set -u
: "${OUT:?set OUT to the folder for the results}"
if [ -n "${TINY:-}" ]; then  # a rehearsal on the CPU with tiny models of the same families (seconds)
  card=cpu; tiny=--tiny
else
  pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1 | tail -2
  export PYTHONPATH=/tmp/site:lib
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | awk '{print tolower($NF)}'); tiny=""
fi
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
shapes=("$@")
[ ${#shapes[@]} -eq 0 ] && shapes=(mamba-codestral-7b falcon-mamba-7b)
for s in "${shapes[@]}"; do
  extra=""
  [ "$s" = falcon-mamba-7b ] && extra="--scans mambapy,cuda_kernels"  # the sequential loop was measured before
  python bench/bench_gpu_scale.py --shape "$s" $extra $tiny --repeats 3 --unbatched-samples 2 --samples 4 --loo-samples 2 \
    --out "$OUT/${card}_${s}.json" 2>&1 | tee "$OUT/${card}_${s}.log" | cut -c1-300
done
