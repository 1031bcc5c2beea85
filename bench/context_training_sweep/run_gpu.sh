#!/bin/bash
# one GPU call: install wheels, run the recipes in parallel, collect jsonl in $OUT
set -u
pip install -q --no-deps --target /tmp/site .whl/mambapy-*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name --format=csv,noheader
M=${MINUTES:-6}
S=${STEPS:-4000}
run() { python bench/context_training_sweep/sweep.py --minutes $M --steps $S "$@" > $OUT/$2.log 2>&1 & }
run --name base --share_ctx 0.6 --lr 1e-3
run --name rep --share_ctx 0.4 --share_rep 0.3 --lr 1e-3
run --name rep_lr3 --share_ctx 0.4 --share_rep 0.3 --lr 3e-3
run --name rep_query --share_ctx 0.4 --share_rep 0.3 --lr 2e-3 --loss query
run --name scratch_rep --init scratch --share_ctx 0.4 --share_rep 0.3 --lr 3e-3 --warmup 50
run --name small_rep --init scratch --d_model 128 --n_layers 2 --share_ctx 0.4 --share_rep 0.3 --lr 3e-3 --warmup 50
run --name rep_heavy --share_ctx 0.3 --share_rep 0.5 --lr 2e-3
wait
tail -n 3 $OUT/*.log
