"""Can the local code LM's families learn to copy from their context at all? Diagnostics before recipes.

    python bench/bench_copy_diagnostics.py --out reports/bench/copy_diagnostics.json [--steps 300] [--models DIR ...]
    python bench/bench_copy_diagnostics.py --cpu-tiny --out reports/bench/copy_diagnostics_tiny.json   # make bench

Three checks, side by side in one run, on the same data (the stdlib corpus the code LMs train on, never the
evaluation projects; the copy probes come from its held-out files):

1. **Gradient into the first occurrence**, every family and scan path that training uses (mambapy's parallel scan
   for Mamba-1, transformers' chunked torch scan for Mamba-2 and the Mamba-2 layers of the hybrid, attention): the
   loss on a repeated span must reach the embeddings of its first occurrence.
2. **Same batches, same steps**: one small model per family (``--families``; equal width and depth) trained from the
   same seed on the same sequence stream — repeated code spans and repeated random-token spans at a distance (scored
   on the repeat; ``--span-share`` / ``--random-span-share``) mixed with plain code windows — with the trainer's own
   loss and optimizer; then the copy curves of each. The attention model is the instrument check: if it does not copy
   random spans (the pure induction signal), the data pipeline is wrong, not the SSM.
3. **The copy curves** (gap = loss on the first occurrence minus on the repeat, nats/token, per span length
   8/16/32/64/256 and distance), of code spans and of random-token spans, of the trained families and of any saved
   code LM given with ``--models``.

Also the seconds per training step of each family (forward + backward of ``--batch`` sequences of ``--seq-len``):
the throughput the code-LM budget is planned from.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from deltalens.codelm.curriculum import CurriculumConfig, CurriculumSampler
from deltalens.codelm.diagnostics import copy_curve, copy_sequences, first_occurrence_gradient
from deltalens.codelm.model import CodeLMConfig
from deltalens.codelm.params import CodeLMParams
from deltalens.codelm.recall import random_token_ids
from deltalens.codelm.train import accumulate_gradients, param_groups, token_stream

FAMILIES = {  # equal width / depth; the hybrid's layer 1 attends (attn_layers), the rest are Mamba-2
    "mamba1": {"arch": "mamba1", "d_state": 16},
    "mamba2": {"arch": "mamba2", "d_state": 64},
    "hybrid": {"arch": "hybrid", "d_state": 64, "attn_layers": [1]},
    "attention": {"arch": "attention"},
}


def family_config(name: str, d_model: int, n_layers: int, tiny: bool) -> CodeLMConfig:
    kw = dict(FAMILIES[name])
    if kw["arch"] in ("mamba2", "hybrid"):
        kw.update(head_dim=16 if tiny else 64, chunk_size=32 if tiny else 256)
    if kw["arch"] in ("hybrid", "attention"):
        kw.update(n_attention_heads=2 if tiny else 4, intermediate_size=2 * d_model)
        if kw["arch"] == "hybrid":
            kw["attn_layers"] = [min(1, n_layers - 1)]
    return CodeLMConfig(d_model=d_model, n_layers=n_layers, **kw)


def build(name: str, cfg: CodeLMConfig, vocab: int, seed: int):
    from deltalens.codelm.train import build_model

    params = CodeLMParams(model=cfg, seed=seed)
    return build_model(params, vocab, None, {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1})


def corpus_streams(tiny: bool, vocab_size: int):
    from deltalens.codelm.corpus import CorpusConfig, build_corpus
    from deltalens.codelm.tokenizer import TokenizerConfig, encode_documents, train_tokenizer

    corpus = build_corpus(CorpusConfig(max_chars=300_000 if tiny else 4_000_000, held_out_fraction=0.05))
    tok = train_tokenizer(corpus.texts("train"), TokenizerConfig(vocab_size=vocab_size))
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    train = token_stream(encode_documents(tok, corpus.texts("train")), eos)
    held = token_stream(encode_documents(tok, corpus.texts("held_out")), eos)
    return tok, train, held


def best_gap(points: list[dict], source: str) -> float:
    """The largest copy gap among ``points`` (asdict'ed CopyPoints) of one ``source`` (code | random)."""
    return max(p["gap"] for p in points if p["source"] == source)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/bench/copy_diagnostics.json")
    ap.add_argument("--cpu-tiny", action="store_true", help="tiny models and few steps: the code path in seconds")
    ap.add_argument("--families", default="mamba1,mamba2,hybrid,attention")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--span-share", type=float, default=0.25, help="share of the training sequences that repeat a code span")
    ap.add_argument("--random-span-share", type=float, default=0.25,
                    help="share of the training sequences that repeat a random-token span")
    ap.add_argument("--probe-spans", default="8,16,32,64,256")
    ap.add_argument("--probe-distances", default="64,512")
    ap.add_argument("--probes", type=int, default=16, help="sequences per (span, distance)")
    ap.add_argument("--models", nargs="*", default=[], help="saved code LM directories: their copy curves too")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.cpu_tiny:
        args.steps, args.seq_len, args.d_model, args.layers = min(args.steps, 6), 96, 32, 2
        args.probe_spans, args.probe_distances, args.probes = "8,16", "16", 4
    torch.set_num_threads(args.threads)
    spans = [int(x) for x in args.probe_spans.split(",")]
    distances = [int(x) for x in args.probe_distances.split(",")]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok, train, held = corpus_streams(args.cpu_tiny, 512 if args.cpu_tiny else 8192)
    vocab = len(tok)
    result: dict = {"args": vars(args), "machine": {"platform": platform.platform(), "threads": args.threads,
                                                   "torch": torch.__version__},
                    "train_tokens": int(train.numel()), "held_out_tokens": int(held.numel()), "families": {}}

    def save():
        out.write_text(json.dumps(result, indent=1) + "\n")

    names = args.families.split(",")
    curriculum = CurriculumConfig(spans=(args.span_share, args.span_share), span_lengths=(8, 16, 32, 64),
                                  random_spans=(args.random_span_share, args.random_span_share),
                                  random_span_lengths=(8, 16, 32, 64))
    random_ids = random_token_ids(tok)

    def curves(model):  # code spans, then random-token spans: the same (span, distance) grid
        return [asdict(p) for ids in (None, random_ids)
                for p in copy_curve(model, held, spans, distances, args.probes, args.seed, random_ids=ids)]

    for name in names:
        cfg = family_config(name, args.d_model, args.layers, args.cpu_tiny)
        model = build(name, cfg, vocab, args.seed)
        seq, first, repeat = copy_sequences(held, 16, 32, 1, args.seed)[0]
        grad = first_occurrence_gradient(model, seq, first, repeat, 16)
        row: dict = {"model": asdict(cfg), "parameters": int(sum(p.numel() for p in model.parameters())),
                     "gradient_at_init": grad,
                     "copy_at_init": curves(model)}
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=args.lr, betas=(0.9, 0.95))
        gen = torch.Generator().manual_seed(args.seed)  # the same stream of sequences for every family
        sampler = CurriculumSampler(curriculum, train, [], tok, 0.0, args.seq_len, 0, "all", gen)
        losses, t0 = [], time.perf_counter()
        model.train()
        for step in range(args.steps):
            warm = min(1.0, (step + 1) / 20)
            for g in opt.param_groups:
                g["lr"] = args.lr * warm
            batch = [sampler.draw(step / max(1, args.steps - 1)) for _ in range(args.batch)]
            opt.zero_grad(set_to_none=True)
            losses.append(float(accumulate_gradients(model, batch, 1)))
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        seconds = time.perf_counter() - t0
        row.update({"steps": args.steps, "seconds": round(seconds, 2),
                    "seconds_per_step": seconds / max(1, args.steps), "drawn": sampler.counts,
                    "train_loss_first_last": [losses[0], losses[-1]] if losses else None,
                    "gradient_after": first_occurrence_gradient(model, seq, first, repeat, 16),
                    "copy_after": curves(model)})
        result["families"][name] = row
        save()
        best = {src: best_gap(row["copy_after"], src) for src in ("code", "random")}
        print(f"{name:9s} {row['parameters'] / 1e6:.2f} M params, {row['seconds_per_step']:.2f} s/step, "
              f"grad into first occurrence {grad['first_occurrence']:.2e}, best copy gap after {args.steps} steps: "
              f"code spans {best['code']:.3f}, random spans {best['random']:.3f} nats/token", flush=True)
    for d in args.models:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from deltalens.codelm.hf_lm import TransformersLM

        mtok = AutoTokenizer.from_pretrained(d)
        if mtok.get_vocab() != tok.get_vocab():
            from deltalens.codelm.corpus import CorpusConfig, build_corpus
            from deltalens.codelm.tokenizer import encode_documents

            corpus = build_corpus(CorpusConfig(max_chars=4_000_000, held_out_fraction=0.05))
            mheld = token_stream(encode_documents(mtok, corpus.texts("held_out")),
                                 mtok.convert_tokens_to_ids("<|endoftext|>"))
        else:
            mheld = held
        lm = TransformersLM(AutoModelForCausalLM.from_pretrained(d).float().eval())
        mids = random_token_ids(mtok)
        result.setdefault("models", {})[d] = [asdict(p) for ids in (None, mids) for p in
                                              copy_curve(lm, mheld, spans, distances, args.probes, args.seed,
                                                         random_ids=ids)]
        save()
    attention = result["families"].get("attention")
    if attention is not None:
        gap, code = best_gap(attention["copy_after"], "random"), best_gap(attention["copy_after"], "code")
        result["instrument_check"] = {"attention_best_gap": gap, "attention_best_code_gap": code, "copies": gap > 0.5}
        save()
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
