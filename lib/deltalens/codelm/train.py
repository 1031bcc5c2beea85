"""Train the local code LM on CPU: corpus -> tokenizer -> mambapy Mamba LM -> transformers model directory.

``model.arch: mamba2`` trains transformers' own ``Mamba2ForCausalLM`` instead (its PyTorch chunked scan; saved as
is, no conversion: :mod:`.mamba2`), with the same data, schedule, evaluation and outputs: the Mamba-2 twin.

Training samples windows of ``seq_len + 1`` tokens at seeded random offsets of the train token stream (documents
joined by ``<|endoftext|>``), AdamW with linear warmup and cosine decay, gradient clipping, float32. It stops at
``max_steps`` or after ``max_minutes``; the cosine follows the steps only, so the model never depends on the machine's
speed (a run stopped early by the clock has not finished its decay; ``training.json`` records ``stopped_by``). A step's batch is
processed in micro-batches whose gradients accumulate: mambapy's scan materialises (batch, seq_len, d_inner, d_state)
float32 tensors, and on a CPU a step is several times faster per token while those fit the L3 cache.

The held-out loss (nats per token) is measured every ``eval_every`` steps on a fixed set of windows of the
held-out files (never trained on, nor seen by the tokenizer) and at the end; perplexity = exp(loss); bits per
character (approximate: the loss times the held-out files' tokens-per-character ratio) make models with different
tokenizers comparable.

Output directory (written to a temporary sibling and renamed at the end, so an interrupted run leaves no half
model): transformers ``config.json`` + ``model.safetensors`` + ``generation_config.json``, the tokenizer files,
``training.json`` (parameters, corpus summary, curve, held-out loss, timings, versions) and ``corpus_manifest.json``
(every file with its sha256, skipped files with reasons). If the directory already holds a model with the same key
(hash of the parameters and of the corpus content) training is skipped.

Why one module above the ~300-line guideline: the training loop, its held-out evaluation and the atomic
save / reuse of a model folder share the run's state (model, tokenizer, parameters, outcome); the parameters live in
:mod:`.train_config`, the Mamba-2 model in :mod:`.mamba2`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.params import ParameterError
from .params import CodeLMParams
from .train_config import CodeLMTrainConfig  # re-exported for callers of deltalens.codelm.train


# ---- data ------------------------------------------------------------------------------------------------------------
def token_stream(docs: list[list[int]], eos_id: int) -> torch.Tensor:
    """``eos d1 eos d2 eos ...``: every document starts after an end-of-text token (int64, 1-D)."""
    flat = [eos_id]
    for ids in docs:
        flat += ids
        flat.append(eos_id)
    return torch.tensor(flat, dtype=torch.long)


def sample_windows(stream: torch.Tensor, seq_len: int, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """(batch_size, seq_len + 1) windows at seeded uniform offsets."""
    hi = stream.numel() - seq_len - 1
    if hi < 1:
        raise ParameterError(f"train: parameter seq_len={seq_len} is too large for the train corpus "
                             f"({stream.numel()} tokens); lower seq_len or raise corpus.max_chars")
    starts = torch.randint(0, hi + 1, (batch_size,), generator=gen)
    return torch.stack([stream[s:s + seq_len + 1] for s in starts.tolist()])


def held_out_windows(stream: torch.Tensor, seq_len: int, max_tokens: int) -> torch.Tensor:
    """Non-overlapping windows of ``seq_len + 1`` tokens spread evenly over the held-out stream (at most
    ``max_tokens // seq_len`` of them); a held-out stream shorter than one window gives one shorter window."""
    if stream.numel() < 2:
        raise ParameterError("corpus: the held-out files have no tokens; raise corpus.held_out_fraction")
    length = min(seq_len, stream.numel() - 1)
    n = max(1, min(max_tokens // length, (stream.numel() - 1) // length))
    spacing = (stream.numel() - 1 - length) // (n - 1) if n > 1 else 0  # >= length: the windows never overlap
    return torch.stack([stream[i * spacing:i * spacing + length + 1] for i in range(n)])


@torch.no_grad()
def held_out_loss(model: nn.Module, windows: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy (nats/token) over every position of ``windows``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for s in range(0, windows.shape[0], batch_size):
        w = windows[s:s + batch_size].to(next(model.parameters()).device)
        logits = model(w[:, :-1])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum"))
        count += w[:, 1:].numel()
    model.train(was_training)
    return total / count


def sample_mixed(stream: torch.Tensor, contexts: list[torch.Tensor], share: float, seq_len: int, batch_size: int,
                 gen: torch.Generator, starts: list[int] | None = None) -> list[tuple[torch.Tensor, int]]:
    """``batch_size`` (1-D sequence, first scored position): each a prompt laid out like the evaluation prompts with
    probability ``share`` (at most ``seq_len + 1`` tokens; scored from ``starts[i]``), else a plain window of
    ``seq_len + 1`` tokens (scored everywhere)."""
    out = []
    for _ in range(batch_size):
        if contexts and float(torch.rand((), generator=gen)) < share:
            i = int(torch.randint(len(contexts), (), generator=gen))
            out.append((contexts[i][:seq_len + 1], starts[i] if starts else 0))
        else:
            out.append((sample_windows(stream, seq_len, 1, gen)[0], 0))
    return out


def accumulate_gradients(model: nn.Module, batch, micro_batch_size: int,
                         by_kind: dict[str, list[float]] | None = None) -> torch.Tensor:
    """Backward of the batch's mean next-token loss, ``micro_batch_size`` windows at a time; returns the loss.
    A list of (sequence, first scored position) of different lengths (:func:`sample_mixed`) or of
    :class:`~.curriculum.Scored` sequences (scored on ``tokens[start:end]``) weighs each sequence equally; with
    ``micro_batch_size`` 1 it goes one sequence at a time, otherwise sequences of equal length go up to
    ``micro_batch_size`` per forward (the causal model's logits before ``end`` do not depend on what follows, so each
    sequence's loss is the one it has alone). ``by_kind`` (a dict) collects each Scored sequence's loss under its
    kind (the repeat loss of random spans vs step is when copying is learned)."""
    device = next(model.parameters()).device
    loss = torch.zeros((), device=device)
    if isinstance(batch, list):
        items = [(it.tokens, it.start, it.end, it.kind) if hasattr(it, "tokens") else (*it, None, None)
                 for it in batch]
        groups: dict[int, list[int]] = {}  # sequences of one length, in batch order (one group each at size 1)
        for i, (seq, *_rest) in enumerate(items):
            groups.setdefault(seq.numel() if micro_batch_size > 1 else -1 - i, []).append(i)
        for members in groups.values():
            for at in range(0, len(members), micro_batch_size):
                micro = [items[i] for i in members[at:at + micro_batch_size]]
                ends = [seq.numel() if end is None else end for seq, _, end, _ in micro]
                x = torch.stack([seq[:max(ends)] for seq, *_ in micro]).to(device)
                logits = model(x[:, :max(ends) - 1])
                if len(micro) == 1:  # one sequence: its mean loss on its targets (the path of every older recipe)
                    (_, start, _, kind), end = micro[0], ends[0]
                    start = max(start, 1)  # targets from position start
                    part = F.cross_entropy(logits[0, start - 1:end - 1], x[0, start:end])
                    (part / len(batch)).backward()
                    loss += part.detach() / len(batch)
                    if by_kind is not None and kind is not None:
                        by_kind.setdefault(kind, []).append(float(part.detach()))
                    continue
                # one cross-entropy over the micro batch, each sequence's scored targets weighted 1 / their number
                # (per-sequence slices of the logits would each backpropagate a full-size gradient)
                weight = torch.zeros(x.shape[0], x.shape[1] - 1, device=device)
                for r, ((_, start, _, _), end) in enumerate(zip(micro, ends)):
                    start = max(start, 1)  # targets from position start
                    weight[r, start - 1:end - 1] = 1.0 / (end - start)
                nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
                per_seq = (nll.view_as(weight) * weight).sum(1)  # each sequence's mean loss on its targets
                (per_seq.sum() / len(batch)).backward()
                loss += per_seq.detach().sum() / len(batch)
                if by_kind is not None:
                    for (_, _, _, kind), part in zip(micro, per_seq.detach().tolist()):
                        if kind is not None:
                            by_kind.setdefault(kind, []).append(part)
        return loss
    for micro in batch.to(device).split(micro_batch_size):
        logits = model(micro[:, :-1])
        part = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), micro[:, 1:].reshape(-1))
        weight = micro.shape[0] / batch.shape[0]
        (part * weight).backward()
        loss += part.detach() * weight
    return loss


RECENT = 200  # losses per kind in the progress bar's running mean

NO_DECAY_NAMES = ("A_log", "D", "dt_bias")  # the SSM's decay, skip and step bias (official Mamba: _no_weight_decay)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: never on norms, biases, or the SSM's ``A_log``, ``D``, ``dt_bias`` (by
    mambapy's ``_no_weight_decay`` mark or by name, whatever their shape)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # a tied weight appears once
        ssm = name.rsplit(".", 1)[-1] in NO_DECAY_NAMES or getattr(p, "_no_weight_decay", False)
        (decay if p.dim() >= 2 and not ssm else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_loop(model: nn.Module, opt: torch.optim.Optimizer, train_stream: torch.Tensor, windows: torch.Tensor,
               tc: CodeLMTrainConfig, gen: torch.Generator, progress: bool = True, contexts: list[torch.Tensor] | None = None,
               share: float = 0.0, starts: list[int] | None = None, sampler=None,
               on_eval=None) -> tuple[list[dict], str, float]:
    """Optimizer steps until ``max_steps`` or ``max_minutes``: (curve rows, what stopped it, seconds). ``sampler``
    (a :class:`~.curriculum.CurriculumSampler`) draws every sequence when given; ``on_eval(model) -> dict`` adds
    to the curve row at every evaluation (the held-out context gain of a transformers-format model)."""
    curve: list[dict[str, Any]] = []
    recent: dict[str, list[float]] = {}  # the last RECENT losses per kind (the progress bar's running means)
    step, stopped_by = 0, "max_steps"
    t0 = time.perf_counter()
    bar = tqdm(total=tc.max_steps, desc="train code LM", disable=not progress, mininterval=2.0)
    while step < tc.max_steps:
        elapsed = time.perf_counter() - t0
        if elapsed > 60 * tc.max_minutes:
            stopped_by = "max_minutes"
            break
        lr = tc.lr * tc.lr_factor(step, elapsed)
        for g in opt.param_groups:
            g["lr"] = lr
        if sampler is not None:
            batch = [sampler.draw(step / max(1, tc.max_steps - 1)) for _ in range(tc.batch_size)]
        elif share > 0 and contexts:
            batch = sample_mixed(train_stream, contexts, share, tc.seq_len, tc.batch_size, gen, starts)
        else:
            batch = sample_windows(train_stream, tc.seq_len, tc.batch_size, gen)
        opt.zero_grad(set_to_none=True)
        by_kind: dict[str, list[float]] = {}
        loss = accumulate_gradients(model, batch, tc.micro_batch_size, by_kind).item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"training diverged at step {step + 1} (train loss {loss}); lower train.lr")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else None
        opt.step()
        step += 1
        bar.update(1)
        row: dict[str, Any] = {"step": step, "seconds": round(time.perf_counter() - t0, 3), "lr": lr,
                               "train_loss": loss}
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        if by_kind:  # mean loss per kind of curriculum sequence in this step's batch (and how many there were)
            row["train_loss_by_kind"] = {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}
            row["sequences_by_kind"] = {k: len(v) for k, v in sorted(by_kind.items())}
            for k, v in by_kind.items():
                recent.setdefault(k, []).extend(v)
                del recent[k][:-RECENT]
        if step % tc.eval_every == 0:
            row["held_out_loss"] = held_out_loss(model, windows, tc.eval_batch_size)
            if on_eval is not None:
                row.update(on_eval(model))
            shown = {"held_out": f"{row['held_out_loss']:.3f}"}
            if recent.get("random_span"):  # the repeat of a random span: chance is ln V until copying is learned
                shown["random_repeat"] = f"{sum(recent['random_span']) / len(recent['random_span']):.2f}"
            if row.get("held_out_context_gain") is not None:  # does it read its context yet (held-out projects)
                shown["context_gain"] = f"{row['held_out_context_gain']:+.3f}"
            bar.set_postfix(shown)
        curve.append(row)
    bar.close()
    if not curve:
        raise ParameterError(f"train: parameter max_minutes={tc.max_minutes} left no time for a single step")
    return curve, stopped_by, time.perf_counter() - t0


# ---- the training run ------------------------------------------------------------------------------------------------
@dataclass
class TrainOutcome:
    out: Path
    reused: bool
    summary: dict[str, Any]  # training.json

    def describe(self) -> str:
        s = self.summary
        how = "reused (identical parameters and corpus)" if self.reused else f"trained in {s['train']['seconds']:.0f} s"
        return (f"code LM {how}: {s['train']['steps']} steps, held-out loss {s['held_out']['loss']:.3f} nats/token "
                f"(perplexity {s['held_out']['perplexity']:.1f}, {s['held_out']['bits_per_char']:.3f} bits/char) "
                f"-> {self.out}")


def _versions() -> dict[str, str | None]:
    from ..core.runinfo import package_versions

    return package_versions(("torch", "transformers", "tokenizers", "mambapy", "safetensors"), python=True)


def existing_key(out: Path) -> str | None:
    """The key of the complete model in ``out``, if any."""
    meta = out / "training.json"
    needed = ("config.json", "model.safetensors", "tokenizer.json", "training.json")
    if not all((out / f).is_file() for f in needed):
        return None
    try:
        return json.loads(meta.read_text()).get("key")
    except (OSError, json.JSONDecodeError):
        return None


def train_code_lm(params: CodeLMParams, out: str | Path | None = None, progress: bool = True,
                  force: bool = False, bundle: str | Path | None = None) -> TrainOutcome:
    """Build corpus and tokenizer, train, convert, save to ``out`` (default ``params.out``); reuse when identical.
    ``bundle``: read the corpus and the training prompts from a data bundle (:mod:`.bundle`) instead of building
    them on this machine."""
    from ..core.paths import resolve

    t_start = time.perf_counter()
    out = resolve(out or params.out)
    tc = params.train
    device = tc.resolved_device()  # a cuda request without a GPU fails here, before any work
    if tc.threads:
        torch.set_num_threads(tc.threads)
    corpus, bundled_contexts = read_corpus(params, bundle)
    init, init_key, key = reuse_key(params, corpus)
    if not force and existing_key(out) == key:
        os.utime(out / "config.json")  # make's file target is up to date again
        return TrainOutcome(out, True, json.loads((out / "training.json").read_text()))
    t_corpus = time.perf_counter() - t_start

    t0 = time.perf_counter()
    tok = tokenize(params, corpus, init)
    t_tokenizer = time.perf_counter() - t0

    model = build_model(params, len(tok.tokenizer), init, tok.token_ids).to(device)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=tc.betas)
    gen = torch.Generator().manual_seed(params.seed)
    windows = held_out_windows(tok.held_stream, tc.seq_len, tc.eval_tokens)
    ctx = context_data(params, tok.tokenizer, bundled_contexts)
    sampler = curriculum_sampler(params, tok, ctx.ds, gen)
    on_eval = None
    if ctx.ds is not None and params.model.arch != "mamba1":  # the trained model is the transformers model itself

        def on_eval(m):
            gain = held_out_context_gain(m.hf, tok.tokenizer, ctx.ds, params.context, tc.seq_len)
            m.hf.train()
            return {"held_out_context_gain": gain["context_gain"]}
    curve, stopped_by, train_seconds = train_loop(model, opt, tok.train_stream, windows, tc, gen, progress,
                                                  ctx.sequences, params.context.share, ctx.starts, sampler, on_eval)
    final = curve[-1]["held_out_loss"] if "held_out_loss" in curve[-1] else held_out_loss(
        model, windows, tc.eval_batch_size)
    model.eval()

    model.cpu()  # converted, checked and saved on the CPU, wherever it trained
    hf = to_transformers_model(model, params, tok.token_ids)
    with torch.no_grad():  # the saved model is the trained model (checked again after reloading it from disk)
        probe = windows[:1, :-1]
        reference = model(probe)
        conversion_diff = float((hf(probe, use_cache=False).logits - reference).abs().max())

    context_summary = None
    if ctx.ds is not None:
        from .context_data import summary as context_data_summary

        context_summary = {**context_data_summary(ctx.ds, ctx.sequences, ctx.skipped), "seconds": round(ctx.seconds, 2),
                           "held_out_gain": held_out_context_gain(hf, tok.tokenizer, ctx.ds, params.context,
                                                                  tc.seq_len)}
    summary = training_record(
        params, key, corpus, tok, model, hf, conversion_diff=conversion_diff, context_summary=context_summary,
        sampler=sampler, init=init, init_key=init_key, run=Stopped(curve, stopped_by, train_seconds, device),
        final=final, windows=windows,
        seconds={"corpus": round(t_corpus, 2), "tokenizer": round(t_tokenizer, 2), "train": round(train_seconds, 2),
                 "total": None})
    _save(out, hf, tokenizer=tok.tokenizer, summary=summary, manifest=corpus.manifest, probe=probe,
          reference=reference, t_start=t_start)
    return TrainOutcome(out, False, summary)


# ---- the steps of a run ----------------------------------------------------------------------------------------------
def read_corpus(params: CodeLMParams, bundle: str | Path | None):
    """(corpus, the bundle's training prompts or None): from a data bundle, or the corpus built on this machine."""
    if bundle is not None:
        from .bundle import read_bundle

        return read_bundle(params, bundle)
    from .corpus import build_corpus

    return build_corpus(params.corpus), None


def reuse_key(params: CodeLMParams, corpus) -> tuple[Path | None, str | None, str]:
    """(the model continued from or None, its key, this run's key): the hash of the parameters and the corpus
    content (and of the continued model). A model folder with this key is reused instead of trained."""
    from ..core.paths import resolve

    if params.init_from is None:
        return None, None, params.key(corpus.key)
    init = resolve(params.init_from)
    init_key = existing_key(init)
    if init_key is None:
        raise ParameterError(f"codelm: parameter init_from={params.init_from!r}: no model trained by this project "
                             "there (config.json, model.safetensors, tokenizer.json, training.json); train it first")
    return init, init_key, params.key(corpus.key + ":" + init_key)


@dataclass
class Tokenized:
    tokenizer: Any
    token_ids: dict[str, int]  # bos / eos / pad ids of the saved model's config
    train_stream: torch.Tensor  # (n_train_tokens,) documents joined by the end-of-text id
    held_stream: torch.Tensor   # (n_held_out_tokens,)


def tokenize(params: CodeLMParams, corpus, init: Path | None) -> Tokenized:
    """Train the tokenizer on the train files (a continued model keeps its own) and encode both splits."""
    from .tokenizer import encode_documents, train_tokenizer

    if init is not None:  # the continued model keeps its tokenizer
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(init)
    else:
        tokenizer = train_tokenizer(corpus.texts("train"), params.tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids(params.tokenizer.eos)
    pad_id = tokenizer.convert_tokens_to_ids(params.tokenizer.pad)
    train_stream = token_stream(encode_documents(tokenizer, corpus.texts("train")), eos_id)
    held_stream = token_stream(encode_documents(tokenizer, corpus.texts("held_out")), eos_id)
    token_ids = {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": pad_id}
    return Tokenized(tokenizer, token_ids, train_stream, held_stream)


@dataclass
class ContextData:
    ds: Any = None                                        # the training prompts' dataset, or None (plain code LM)
    sequences: list = field(default_factory=list)         # tokenised training prompts
    skipped: Any = None
    starts: list = field(default_factory=list)            # where each prompt's target line starts
    seconds: float = 0.0


def context_data(params: CodeLMParams, tokenizer, bundled) -> ContextData:
    """The tokenised training prompts (split dev of the training projects) when ``context.enabled``."""
    if not params.context.enabled:
        return ContextData()
    from .context_data import build_training_contexts, context_sequences
    from .corpus import excluded_names

    t1 = time.perf_counter()
    ds = bundled if bundled is not None else build_training_contexts(params.context, excluded_names(params.corpus),
                                                                     params.seed)
    sequences, skipped, starts = context_sequences(ds, tokenizer, params.context, params.train.seq_len + 1,
                                                   split="dev")
    if not sequences:
        raise ParameterError("context: the builder made no training prompt; add stdlib_packages / installed")
    return ContextData(ds, sequences, skipped, starts, time.perf_counter() - t1)


def curriculum_sampler(params: CodeLMParams, tok: Tokenized, ctx_ds, gen: torch.Generator):
    """The curriculum's sampler (``curriculum.enabled``), drawing from ``gen``; else None."""
    if not params.curriculum.enabled:
        return None
    from .curriculum import CurriculumSampler

    return CurriculumSampler(params.curriculum, tok.train_stream, training_prompts(ctx_ds, params.context),
                             tok.tokenizer, params.context.share if ctx_ds is not None else 0.0, params.train.seq_len,
                             params.context.query_chars, params.context.loss, gen)


@dataclass
class Stopped:
    curve: list[dict]   # one record per evaluation
    stopped_by: str     # max_steps | max_minutes
    seconds: float
    device: str


def training_record(params: CodeLMParams, key: str, corpus, tok: Tokenized, model: nn.Module, hf, *,
                    conversion_diff: float, context_summary: dict | None, sampler, init: Path | None,
                    init_key: str | None, run: Stopped, final: float, windows: torch.Tensor,
                    seconds: dict) -> dict:
    """``training.json``: the key, parameters, corpus, tokenizer, model, training, held-out loss, timings, versions
    and the curve."""
    tc, step = params.train, run.curve[-1]["step"]
    held_chars = sum(len(t) for t in corpus.texts("held_out"))
    held_tokens = tok.held_stream.numel() - 1 - sum(1 for _ in corpus.texts("held_out"))  # without the separators
    n_train = tok.train_stream.numel()
    return {
        "key": key,
        "params": params.content_params(),
        "corpus": {k: corpus.manifest[k] for k in ("python", "excluded_distributions", "content_sha256", "counts")},
        "tokenizer": {
            "vocab_size": len(tok.tokenizer),
            "train_tokens": int(n_train),
            "held_out_tokens": int(tok.held_stream.numel()),
            "train_chars_per_token": corpus.manifest["counts"]["train_chars"] / max(1, n_train),
        },
        "model": {"n_parameters": model.n_parameters(), "architecture": type(hf).__name__,
                  "conversion_max_abs_logit_diff": conversion_diff},
        "trained_length": tc.seq_len,   # tokens per training sequence: evaluation prompts longer than this are
                                        # outside what the model was trained on (the extraction warns)
        "context": context_summary,     # null for a plain code LM
        "curriculum": None if sampler is None else {"drawn": dict(sorted(sampler.counts.items())),
                                                    "rename_failures": sampler.rename_failures},
        "init_from": None if init is None else {"path": params.init_from, "key": init_key,
                                                "training": json.loads((init / "training.json").read_text())["train"]},
        "train": {"steps": step, "stopped_by": run.stopped_by, "seconds": round(run.seconds, 2), "device": run.device,
                  "device_name": torch.cuda.get_device_name(0) if run.device == "cuda" else "cpu",
                  "steps_per_second": step / run.seconds if run.seconds else None,
                  "tokens_seen": step * tc.batch_size * tc.seq_len,
                  "epochs": step * tc.batch_size * tc.seq_len / max(1, n_train)},
        "held_out": {"loss": final, "perplexity": math.exp(final), "windows": int(windows.shape[0]),
                     "tokens": int(windows[:, 1:].numel()),
                     "bits_per_char": final / math.log(2) * held_tokens / max(1, held_chars)},
        "seconds": seconds,
        "versions": _versions(),
        "curve": run.curve,
    }


def build_model(params: CodeLMParams, vocab_size: int, init: Path | None, token_ids: dict[str, int]) -> nn.Module:
    """The model to train (``model.arch``): mamba1, a mambapy LM (converted to ``MambaForCausalLM`` at the end);
    mamba2 / hybrid / attention, transformers' ``Mamba2ForCausalLM`` / ``BambaForCausalLM`` / ``LlamaForCausalLM``
    behind the same interface. Seeded; ``init``: continue that model; else ``model.init: mimetic`` starts every SSM
    mixer close to linear attention (:func:`.mimetic.mimetic_init_`)."""
    if params.model.arch == "mamba2":
        from .mamba2 import build_mamba2_lm, load_mamba2_weights

        model = build_mamba2_lm(params.model, vocab_size, params.seed, **token_ids)
        loader = load_mamba2_weights
    elif params.model.arch in ("hybrid", "attention"):
        from .hybrid import build_transformers_lm, load_transformers_lm_weights

        model = build_transformers_lm(params.model, vocab_size, params.seed, **token_ids)
        loader = load_transformers_lm_weights
    else:
        from .model import build_lm, load_transformers_weights

        model = build_lm(params.model, vocab_size=vocab_size, seed=params.seed)
        loader = load_transformers_weights
    if init is not None:
        from transformers import AutoModelForCausalLM

        loader(model, AutoModelForCausalLM.from_pretrained(init))
    elif params.model.init == "mimetic":
        from .mimetic import mimetic_init_

        mimetic_init_(model, a_scale=params.model.mimetic_a_scale)
    return model


def to_transformers_model(model: nn.Module, params: CodeLMParams, token_ids: dict[str, int]):
    """The transformers model to save: the Mamba-1 model converted exactly, the Mamba-2 model itself."""
    if params.model.arch != "mamba1":
        return model.to_transformers()
    from .model import to_transformers

    return to_transformers(model, **token_ids)


def training_prompts(ds, cfg) -> list[tuple[dict, str]]:
    """(sample, order) for every training sample (split dev of the training projects) and prompt order: what the
    curriculum lays out — renamed or not — at each draw."""
    if ds is None:
        return []
    ids = ds.samples.loc[ds.samples["split"] == "dev", "sample_id"]
    return [(ds.sample(sid), order) for sid in ids for order in cfg.orders]


def held_out_context_gain(hf, tokenizer, ds, cfg, max_tokens: int) -> dict:
    """Target-line loss without any chunk minus with all chunks (nats/token), and greedy exact match with / without,
    on prompts of the held-out training projects (context first; the same measurement as the evaluation's)."""
    from ..lm.forward import forward_all
    from ..lm.loading import set_scan
    from ..lm.prompts import LayoutPolicy, encode_variants

    ids = list(ds.samples.loc[ds.samples["split"] == "test", "sample_id"])[:cfg.eval_samples]
    if not ids:
        return {"samples": 0}
    hf.eval()
    set_scan(hf, "auto")
    policy = LayoutPolicy("context_first", cfg.query_chars, max_tokens, "drop_chunks")
    gains, em_with, em_without, too_long = [], [], [], 0
    for sid in ids:
        sample = ds.sample(sid)
        try:
            full, none, _ = encode_variants(tokenizer, sample, policy)
        except ParameterError:  # even the query alone exceeds the trained length: counted, not measured
            too_long += 1
            continue
        a, b = forward_all(hf, [full, none], capture=False)
        gains.append(b.target_loss - a.target_loss)
        em_with.append(a.exact_match)
        em_without.append(b.exact_match)
    n = len(gains)
    return {"samples": n, "too_long": too_long, "context_gain": sum(gains) / n if n else None,
            "exact_match_with": sum(em_with) / n if n else None, "exact_match_without": sum(em_without) / n if n else None}


def _save(out: Path, hf, tokenizer, summary: dict, manifest: dict, probe: torch.Tensor, reference: torch.Tensor,
          t_start: float) -> None:
    """Write everything into a temporary sibling directory, reload it, then swap it in."""
    from transformers import AutoModelForCausalLM

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        hf.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "corpus_manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        reloaded = AutoModelForCausalLM.from_pretrained(tmp).eval()
        with torch.no_grad():
            diff = float((reloaded(probe, use_cache=False).logits - reference).abs().max())
        if not diff <= 1e-4:
            raise RuntimeError(f"the saved model does not reproduce the trained model (max logit diff {diff:.2e})")
        summary["model"]["reload_max_abs_logit_diff"] = diff
        summary["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
        (tmp / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
