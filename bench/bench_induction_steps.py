"""How many optimizer steps until a small model learns induction (copying) at all? The pure task, before any code.

    python bench/bench_induction_steps.py --out reports/bench/induction_steps.json [--steps 1000] [--batch 16]
    python bench/bench_induction_steps.py --tiny --out reports/bench/induction_steps_tiny.json   # the code path

Each training sequence is ``--seq-len`` uniformly random tokens whose last ``--span`` tokens repeat the span that
starts at position ``--first`` (the classic repeated-random-tokens probe): the loss is taken on the repeat only, so
nothing but copying from the first occurrence can lower it below chance (ln V nats). Every family (``--families``:
transformers' ``LlamaForCausalLM`` — attention only —, ``BambaForCausalLM`` — Mamba-2 layers with attention at
``--attn-layers`` —, ``Mamba2ForCausalLM``; equal width, depth, MLP) trains from the same seed on the same batches
with AdamW; ``mamba1`` is the project's mambapy Mamba-1 LM (``deltalens.codelm.model.build_lm``, parallel scan) of
the same width and depth. The repeat loss is recorded every ``--log-every`` steps. The step at which the curve leaves chance is
what a copying curriculum has to budget for (issue 22): the code LMs' copying data is far noisier than this.

``--random-first`` draws the first occurrence's position per sequence. With a fixed ``--first`` the repeat sits at
one fixed offset from its source, which one attention head can learn to look up by relative position alone — a
shortcut, not induction (measured here: attention-only 9.03 -> 0.005 in 1,000 steps with a fixed offset, still at
chance after 1,500 with random positions at 256 tokens; it left chance after ~900 steps at 64 tokens).
``--token-vocab N`` draws the tokens from N - 2 ids only (the model keeps ``--vocab``).

``--init mimetic`` starts every Mamba-1 / Mamba-2 mixer close to linear attention (C = B, slow decay:
:func:`deltalens.codelm.mimetic.mimetic_init_`); ``--decay official`` keeps A_log, D and dt_bias out of weight decay
as the official Mamba code does (default ``all``: every parameter decays, as the runs recorded before this option).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F


class Mamba1LM(torch.nn.Module):
    """The mambapy Mamba-1 LM behind transformers' call (``model(x, use_cache=False).logits``)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, x, use_cache=False):
        return SimpleNamespace(logits=self.lm(x))


def build(family: str, vocab: int, d: int, layers: int, attn_layers: list[int], seed: int,
          d_state: int | None = None):
    """``d_state``: the SSM state (default 64 for the Mamba-2 families, as the recorded runs; 16 for Mamba-1)."""
    import transformers

    if family == "mamba1":
        from deltalens.codelm.model import CodeLMConfig, build_lm

        return Mamba1LM(build_lm(CodeLMConfig(d_model=d, n_layers=layers, d_state=d_state or 16), vocab, seed))
    d_state = d_state or 64
    torch.manual_seed(seed)
    common = dict(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, intermediate_size=2 * d,
                  tie_word_embeddings=True)
    heads = max(1, d // 32)
    if family == "attention":
        cfg = transformers.LlamaConfig(num_attention_heads=heads, num_key_value_heads=heads,
                                       max_position_embeddings=4096, **common)
        return transformers.LlamaForCausalLM(cfg)
    mamba = dict(mamba_n_heads=max(1, 2 * d // 64), mamba_d_head=64, mamba_n_groups=1, mamba_d_state=d_state,
                 mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=64)
    if family == "hybrid":
        cfg = transformers.BambaConfig(attn_layer_indices=attn_layers, num_attention_heads=heads,
                                       num_key_value_heads=heads, max_position_embeddings=4096, **mamba, **common)
        return transformers.BambaForCausalLM(cfg)
    if family == "mamba2":
        cfg = transformers.Mamba2Config(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, state_size=d_state,
                                        num_heads=max(1, 2 * d // 64), head_dim=64, n_groups=1, chunk_size=64,
                                        tie_word_embeddings=True)
        return transformers.Mamba2ForCausalLM(cfg)
    raise ValueError(f"--families: unknown family {family!r}; allowed: attention, hybrid, mamba2, mamba1")


NO_DECAY = ("A_log", "D", "dt_bias")   # the official Mamba code's _no_weight_decay parameters


def param_groups(model, decay: str, weight_decay: float = 0.1) -> list[dict]:
    """AdamW groups: every parameter decays (``all``), or the SSM's A_log, D and dt_bias do not (``official``)."""
    if decay == "all":
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    keep = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] in NO_DECAY]
    rest = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] not in NO_DECAY]
    return [{"params": rest, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def batch(gen: torch.Generator, n: int, seq_len: int, vocab: int, first: int | None, span: int) -> torch.Tensor:
    """``n`` sequences of random tokens (ids 2 .. vocab - 1) whose last ``span`` repeat the span at ``first`` — or,
    ``first=None``, at a position drawn per sequence from 0 .. seq_len - 2 span (the distance varies: no fixed offset
    to look up)."""
    x = torch.randint(2, vocab, (n, seq_len), generator=gen)
    if first is not None:
        x[:, seq_len - span:] = x[:, first:first + span]
        return x
    for row, f in zip(x, torch.randint(0, seq_len - 2 * span + 1, (n,), generator=gen).tolist()):
        row[seq_len - span:] = row[f:f + span]
    return x


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/bench/induction_steps.json")
    ap.add_argument("--tiny", action="store_true", help="a few steps of tiny models: the code path in seconds")
    ap.add_argument("--families", default="attention,hybrid")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--span", type=int, default=32)
    ap.add_argument("--first", type=int, default=40)
    ap.add_argument("--random-first", action="store_true",
                    help="draw the first occurrence's position per sequence: true induction, where a fixed --first "
                         "also lets a model copy from one fixed offset (a positional shortcut)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--token-vocab", type=int, default=None,
                    help="draw the sequences' tokens from ids 2 .. N-1 only (the model keeps --vocab): each token is "
                         "seen more often, so the copying map is learned sooner; chance stays ln(N - 2)")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-state", type=int, default=None,
                    help="SSM state size (default: 64 for mamba2 / hybrid, 16 for mamba1)")
    ap.add_argument("--attn-layers", default="1")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", choices=("default", "mimetic"), default="default",
                    help="mimetic: Mamba-1 / Mamba-2 mixers start close to linear attention (C = B, A scaled by --a-scale)")
    ap.add_argument("--a-scale", type=float, default=0.01)
    ap.add_argument("--decay", choices=("all", "official"), default="all",
                    help="official: A_log, D and dt_bias without weight decay (all: every parameter, as before)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.steps, args.batch, args.seq_len, args.span, args.first = 4, 2, 48, 8, 4
        args.vocab, args.d_model, args.log_every = 64, 32, 2
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"args": vars(args), "chance": math.log((args.token_vocab or args.vocab) - 2),
                    "machine": {"platform": platform.platform(), "threads": args.threads, "torch": torch.__version__},
                    "families": {}}
    attn_layers = [int(x) for x in args.attn_layers.split(",") if x != ""]
    for family in args.families.split(","):
        model = build(family, args.vocab, args.d_model, args.layers, attn_layers, args.seed, args.d_state)
        mimetic = 0
        if args.init == "mimetic" and family != "attention":
            from deltalens.codelm.mimetic import mimetic_init_

            mimetic = mimetic_init_(model, a_scale=args.a_scale)
        opt = torch.optim.AdamW(param_groups(model, args.decay), lr=args.lr, betas=(0.9, 0.95))
        gen = torch.Generator().manual_seed(args.seed + 1)  # the same batches for every family
        a = args.seq_len - args.span
        curve, t0 = [], time.perf_counter()
        for step in range(args.steps + 1):
            x = batch(gen, args.batch, args.seq_len, args.token_vocab or args.vocab,
                      None if args.random_first else args.first, args.span)
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, (step + 1) / 50)
            logits = model(x[:, :-1], use_cache=False).logits
            loss = F.cross_entropy(logits[:, a:].reshape(-1, args.vocab), x[:, a + 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % args.log_every == 0:
                curve.append({"step": step, "repeat_loss": loss.item(), "seconds": round(time.perf_counter() - t0, 2)})
                print(f"{family:9s} step {step:5d} repeat loss {loss.item():.3f} (chance {result['chance']:.2f})",
                      flush=True)
        left = next((r["step"] for r in curve if r["repeat_loss"] < result["chance"] - 1.0), None)
        result["families"][family] = {"parameters": int(sum(p.numel() for p in model.parameters())),
                                      "mimetic_mixers": mimetic,
                                      "seconds_per_step": (time.perf_counter() - t0) / (args.steps + 1),
                                      "curve": curve, "first_step_1_nat_below_chance": left}
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
