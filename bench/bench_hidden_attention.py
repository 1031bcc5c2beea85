"""Hidden attention's cost next to the forward it rides on (moved out of the library: a timer is no library code).

    .venv/bin/python bench/bench_hidden_attention.py

A 4-layer mambapy model with d_model 256 (d_inner 512), d_state 16, one row of L = 1,000 tokens, query sets of 8
('prefix_end') and 16 ('target') positions, both kinds ('alpha', 'alpha_u'), one thread: the forward alone, then the
forward with the capture and :func:`deltalens.delta.hidden_attention.hidden_attention_reducer` on every layer.

Recorded earlier (CPU, 1 thread, torch 2.13, on a 2-core machine shared with
other jobs, so an upper bound): a 4-layer mambapy model with d_model 256 (d_inner 512), d_state 16, one row of
L = 1,000 tokens, query sets of 8 ('prefix_end') and 16 ('target') positions, both kinds, four runs: 0.70-1.09 s
for the forward alone, 1.02-1.59 s with the capture and this reducer on every layer, i.e. 0.08-0.17 s per layer for
the 23 distinct query positions (one block), varying with the machine's load. A first version that took one exp
per (query, source, channel, state) and summed S in float64 over (T, d_inner, d_state) took 0.8 s per layer.
"""

from __future__ import annotations

import time

import torch

from deltalens.delta.capture import capture_delta
from deltalens.delta.hidden_attention import hidden_attention_reducer
from deltalens.synthetic.models import ModelConfig, build_model


def main() -> None:
    torch.set_num_threads(1)
    model = build_model(ModelConfig(vocab_size=256, d_model=256, n_layers=4, d_state=16), seed=0).eval()
    length = 1000
    tokens = torch.randint(0, 256, (1, length), generator=torch.Generator().manual_seed(0))
    start = length - 40
    sets = {"prefix_end": [list(range(start - 8, start))], "target": [list(range(start - 1, start + 15))]}
    reducer = hidden_attention_reducer(sets, kinds=("alpha", "alpha_u"))
    with torch.no_grad():
        model(tokens)  # warm-up
        t0 = time.perf_counter()
        model(tokens)
        plain = time.perf_counter() - t0
        with capture_delta(model, reduce=reducer, ssm_inputs=True) as rec:
            t0 = time.perf_counter()
            model(tokens)
            hooked = time.perf_counter() - t0
    assert all(torch.isfinite(v).all() for layer in rec.last() for v in layer.values())
    print(f"4 layers, d_inner 512, d_state 16, L = {length}, 8 + 16 query positions, kinds alpha + alpha_u, 1 thread: "
          f"forward {plain:.3f} s, forward + hidden attention {hooked:.3f} s, ratio {hooked / plain:.2f} "
          f"({(hooked - plain) / 4:.3f} s per layer)")


if __name__ == "__main__":
    main()
