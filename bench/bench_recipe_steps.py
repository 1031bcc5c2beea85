"""What does one optimizer step of each shipped code-LM recipe cost here, and how long is its whole run? The budget of
issue 22 planned from measurements, every recipe side by side in one run.

    python bench/bench_recipe_steps.py --out reports/bench/recipe_steps.json   # every family's three recipes
    python bench/bench_recipe_steps.py --params params/codelm/hybrid-attnfirst.yaml ... --steps 3 --out ...
    python bench/bench_recipe_steps.py --tiny --out reports/bench/recipe_steps_tiny.json  # the code path, seconds

Each recipe's own model (``deltalens.codelm.train.build_model``: the family, width, state, init of its params file)
takes full optimizer steps — forward, backward, gradient clipping and AdamW with the trainer's parameter groups —
on uniformly random token windows of the recipe's shape (``train.batch_size`` x ``train.seq_len``, in micro batches
of ``train.micro_batch_size``: the attention-first recipes' warm stage is 64 x 64, stage 2 4 x 1,024). Random tokens
cost what code costs: a step's work depends on the shapes only. The recipes run interleaved, one step of each per
round (``--steps`` rounds after one warm-up round), so drift of the machine's speed hits each alike; reported per
recipe: median seconds per step, tokens per second, the ratio to the first recipe, and the hours its ``max_steps``
take at that rate, next to the seconds per step a trained model of the recipe recorded, where one is here. The
optimizer step alone: a real run adds its evaluations and data drawing (stage 2's prompts are at most 1,024 tokens,
so its step itself is an upper bound). Threads: ``--threads`` (default 2, what the recipes train
with).

``--tiny`` shrinks every model to d_model 16, one layer (a hybrid two), and the windows to 2 x 32 tokens: the same
code in seconds (the test, and ``make bench``'s smoke of it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from deltalens.codelm.params import load_params
from deltalens.codelm.train import accumulate_gradients, build_model, param_groups

DEFAULT_PARAMS = [f"params/codelm/{family}-{stage}.yaml"  # each family's ablation, stage 1, stage 2; the default first
                  for family, kind in (("hybrid", "attnfirst"), ("mamba2", "mimetic"), ("mamba1", "mimetic"))
                  for stage in (f"{kind}-plain", f"{kind}-warm", kind)]
VOCAB = 8192  # the recipes' tokenizer size (their tokenizer.vocab_size)
TINY = {"model.d_model": 16, "model.n_layers": 1, "train.batch_size": 2, "train.micro_batch_size": 2,
        "train.seq_len": 32}


def recipe(path: str, tiny: bool):
    """The recipe's params (shrunk with ``--tiny``: a hybrid keeps two layers, attention then Mamba-2)."""
    overrides = dict(TINY) if tiny else {}
    params = load_params(path)
    if tiny and params.model.arch == "hybrid":  # one Mamba-2 layer after its one attention layer
        overrides.update({"model.n_layers": 2, "model.attn_layers": [0]})
    if tiny and params.model.arch in ("mamba2", "hybrid") and params.model.head_dim:
        overrides["model.head_dim"] = 8
    return load_params(path, overrides) if overrides else params


def recorded(params) -> dict:
    """What a trained model of this recipe recorded (its ``training.json``, in ``out`` or as the committed
    ``models/<name>/``): seconds per step of the real run, evaluations included, a check on the estimate above."""
    for folder in (Path(params.out), Path("models") / Path(params.out).name):
        record = folder / "training.json"
        if record.is_file():
            train = json.loads(record.read_text())["train"]
            return {"recorded_training_json": str(record), "recorded_device": train["device_name"],
                    "recorded_seconds_per_step": train["seconds"] / max(1, train["steps"])}
    return {"recorded_training_json": None}


class Stepper:
    """One recipe's model and optimizer; ``step()`` is one optimizer step of the trainer on random windows."""

    def __init__(self, path: str, tiny: bool, seed: int):
        self.path, self.params, self.tiny = path, recipe(path, tiny), tiny
        t = self.params.train
        self.model = build_model(self.params, VOCAB, None, {})
        self.model.train()
        self.opt = torch.optim.AdamW(param_groups(self.model, t.weight_decay), lr=t.lr, betas=tuple(t.betas))
        self.gen = torch.Generator().manual_seed(seed)
        self.shape = (t.batch_size, t.seq_len + 1)
        self.seconds: list[float] = []

    def step(self) -> float:
        t = self.params.train
        batch = torch.randint(0, VOCAB, self.shape, generator=self.gen)
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = accumulate_gradients(self.model, batch, t.micro_batch_size)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.opt.step()
        seconds = time.perf_counter() - start
        if not torch.isfinite(loss):
            raise SystemExit(f"{self.path}: the loss is {float(loss)} after {len(self.seconds)} steps")
        return seconds

    def row(self, reference: float | None) -> dict:
        m, t = self.params.model, self.params.train
        median = statistics.median(self.seconds)
        tokens = t.batch_size * t.seq_len
        return {"params_file": self.path, "arch": m.arch, "init": m.init, "d_model": m.d_model,
                "n_layers": m.n_layers, "d_state": m.d_state,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "batch_size": t.batch_size, "seq_len": t.seq_len, "micro_batch_size": t.micro_batch_size,
                "seconds_per_step": median, "seconds_per_step_all": self.seconds, "tokens_per_second": tokens / median,
                "ratio_to_first": None if reference is None else median / reference,
                "max_steps": t.max_steps, "hours_for_max_steps": median * t.max_steps / 3600,
                "max_minutes_guard": t.max_minutes,
                **({"recorded_training_json": None} if self.tiny else recorded(self.params))}  # tiny: another model


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", nargs="+", default=DEFAULT_PARAMS, help="codelm params files (recipes)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per recipe (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="d_model 16, one layer, 2 x 32 tokens: the code path")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    missing = [p for p in args.params if not Path(p).is_file()]
    if missing:
        ap.error(f"no such params file: {', '.join(missing)}")
    torch.set_num_threads(args.threads)
    steppers = [Stepper(p, args.tiny, args.seed) for p in args.params]  # every bad params file fails here, first
    for s in steppers:  # warm-up round (allocator, first-call overheads): not timed
        s.step()
    for r in range(args.steps):
        for s in steppers:
            s.seconds.append(s.step())
        print(f"round {r + 1}/{args.steps}: " + ", ".join(f"{Path(s.path).stem} {s.seconds[-1]:.2f} s" for s in steppers),
              flush=True)
    rows = []
    for s in steppers:
        rows.append(s.row(rows[0]["seconds_per_step"] if rows else None))
    result = {"benchmark": "recipe_steps", "tiny": args.tiny, "steps": args.steps, "threads": args.threads,
              "torch": torch.__version__, "machine": platform.machine(), "processor": platform.processor(),
              "cpu_count": os.cpu_count(), "recipes": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(f"{Path(row['params_file']).stem:28s} {row['arch']:7s} d_state {row['d_state']:4d} "
              f"{row['batch_size']}x{row['seq_len']}: {row['seconds_per_step']:.2f} s/step, "
              f"{row['tokens_per_second']:.0f} tok/s, {row['max_steps']} steps = {row['hours_for_max_steps']:.2f} h")
    return result


if __name__ == "__main__":
    main()
