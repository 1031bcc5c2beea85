"""The LM runtime shared by extraction and filtering: load a pretrained Mamba LM, pick its dtype, device and scan path,
and run batched forwards that return Δ statistics (through :func:`deltalens.capture.capture_delta`), the target-line
loss, greedy exact match and per-token NLL — with ``lm_head`` applied in slices, never on the whole prompt at once.

Scan paths (``scan``), fastest first; Δ is computed before the scan (the hook sits on ``x_proj``, which every path
calls as a module in eval mode), so the path changes speed, never which Δ is captured:

* ``cuda_kernels`` — ``mamba_ssm`` + ``causal_conv1d`` importable on a CUDA device: transformers resolves its
  ``selective_scan_fn`` / ``causal_conv1d_fn`` to them at import time (any dtype);
* ``mambapy`` — transformers' own switch to mambapy's parallel scan (``use_mambapy``). transformers' code for it
  multiplies the float32 states with a half-precision ``C`` and crashes in bf16 / fp16; there the forward runs under
  ``torch.autocast`` in the model's dtype, which casts exactly that matmul (measured: identical hidden states to the
  sequential path in bf16 and fp16 on tiny models);
* ``sequential`` — transformers' Python loop over tokens: slow (one small kernel launch per token and layer), but
  launch-bound on a GPU, so a batch of sequences costs little more than one.

* ``chunked`` — Mamba-2 and its hybrids (Mamba2, Zamba2, Falcon-H1, Nemotron-H, Granite 4.0-H, Bamba): transformers'
  PyTorch chunked scan (``torch_forward``), the only path besides the kernels; Δ is per head (hook on ``in_proj``).

Which paths a model has depends on its mixer family (:data:`FAMILY_SCANS`): Mamba / FalconMamba: kernels, mambapy,
sequential; Jamba and Zamba: kernels, sequential; the Mamba-2 families: kernels, chunked. A path the family does not
have is refused with the list of those it has. ``auto`` takes the kernels where they are importable, else the
family's own path: for Mamba / FalconMamba the parallel scan on CUDA, else (CPU) the parallel scan for small mixers
(d_inner <= 128) and the sequential loop for larger ones (measured: mambapy 40x faster at d_inner 64, 0.75x at
d_inner 512 with ~4000-token prompts on 2 cores).

Batching: sequences are right-padded (the pad positions come after every real token, and every path is causal, so
real positions see exactly what they see alone; pad positions are cut off before any statistic). A batch holds at
most ``batch_tokens`` padded tokens; ``auto`` sizes it from the scan's transient memory per token (see
:func:`auto_batch_tokens`).

Why one module above the ~300-line guideline: it is the single runtime both extraction and filtering call
(loading, dtype, device, scan path, batch planning, the batched forward with Δ statistics and NLL slices); each piece
is short, and they share the scan choice kept on the model, so a split would only add imports between them.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

from .capture import adapter_for, capture_delta, delta_width, find_mixers, mixer_layer_ids
from .chunk_columns import HIDDEN_ATTENTION
from .params import ParameterError, check_choice, check_int
from .paths import resolve
from .prompts import Encoded
from .scores import token_stats

DTYPES = ("float32", "bfloat16", "float16", "half", "auto")
SCANS = ("auto", "cuda_kernels", "mambapy", "sequential", "chunked")
MAMBA2_FAMILIES = ("mamba2", "zamba2", "falcon_h1", "nemotron_h", "granitemoehybrid", "bamba")
FAMILY_SCANS = {"mambapy": ("mambapy",), "mamba": ("cuda_kernels", "mambapy", "sequential"),
                "falcon_mamba": ("cuda_kernels", "mambapy", "sequential"), "jamba": ("cuda_kernels", "sequential"),
                "zamba": ("cuda_kernels", "sequential"), **{f: ("cuda_kernels", "chunked") for f in MAMBA2_FAMILIES}}
HALF = (torch.bfloat16, torch.float16)
CPU_BATCH_BYTES = 3 * 2**30          # transient scan memory allowed per forward on the CPU (~28,000 padded tokens for
# the local code LM). bench/bench_cpu_scan.py: one forward of 28,000 tokens ran at 0.80-0.99x the speed of
# 1,000-9,400-token ones, but extract() (groups of <= 8 samples) gained nothing reliable from a 1 GiB cap (+4 % and
# +29 % in two interleaved runs; a make-all rerun with it was slower): the budget `make all` was timed with stays.
GPU_FREE_SHARE = 0.6                 # share of the free GPU memory a forward's transient tensors may take


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to pass instead."""


# ---- device and dtype ---------------------------------------------------------------------------------------------
def resolve_device(device: str, environ=os.environ) -> str:
    """``auto`` -> cuda when available; under ``accelerate launch`` / ``torchrun`` cuda -> this process' GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and int(environ.get("WORLD_SIZE", 1)) > 1:
        device = f"cuda:{int(environ.get('LOCAL_RANK', 0))}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"parameter device={device!r}: no CUDA GPU is visible here; use device: cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype | str:
    """A torch dtype, or ``"auto"`` (the checkpoint's own). ``half``: bfloat16 where the GPU computes it natively
    (compute capability >= 8: A100, L4, H100, ...), float16 elsewhere (T4, V100); bfloat16 on the CPU."""
    check_choice("dtype", dtype, DTYPES)
    if dtype == "auto":
        return "auto"
    if dtype == "half":
        if device.startswith("cuda") and torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.get_device_capability(torch.device(device))[0] >= 8 else torch.float16
        return torch.bfloat16
    return getattr(torch, dtype)


def load_lm(model: str, *, dtype: str = "float32", device: str = "cpu", device_map: str | None = None,
            allow_download: bool = False):
    """(model in eval mode, fast tokenizer) from a local path, the local Hugging Face cache, or — with
    ``allow_download`` — the hub. Clear errors for an unreachable id and for a model without Mamba mixers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(model).exists() or resolve(model).exists()
    path = str(resolve(model)) if local and not Path(model).exists() else model
    is_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", model) is not None and not local
    if not local and not is_hub_id:
        raise ModelLoadError(f"parameter model={model!r}: no such local directory (and not a hub id like "
                             "'tiiuae/falcon-mamba-7b'); train the default model with `make code-lm`")
    target = "cuda" if device_map else resolve_device(device)
    kw = {"dtype": resolve_dtype(dtype, target)}
    if device_map:
        kw["device_map"] = device_map
    attempts = [True] if local or not allow_download else [True, False]
    err = None
    for local_only in attempts:
        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
            lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only, **kw)
            break
        except (OSError, ValueError) as e:
            err = e
    else:
        if is_hub_id and not allow_download:
            hint = ("the Hugging Face hub is not reachable from here: download the model elsewhere "
                    f"(`huggingface-cli download {model} --local-dir DIR`) and pass model=DIR, or set allow_download")
        elif is_hub_id:
            hint = "the hub download failed: check the id, the network (Kaggle: Internet on) and any access token"
        else:
            hint = "check that the folder holds a transformers model and its tokenizer"
        raise ModelLoadError(f"could not load model {model!r}: {hint}. ({type(err).__name__}: {str(err)[:300]})") from None
    if not getattr(tok, "is_fast", False):
        raise ModelLoadError(f"model {model!r}: its tokenizer is not a fast tokenizer; offsets are needed to map chunks "
                             "to tokens")
    try:
        find_mixers(lm)
    except ValueError as e:
        raise ModelLoadError(f"model {model!r}: {e}") from None
    if not device_map:
        lm = lm.to(target)
    return lm.eval(), tok


def trained_length(lm) -> int | None:
    """Tokens per training sequence of a model this project trained (``training.json`` next to its weights); None
    for other models (their training length is not known here)."""
    import json

    f = Path(str(getattr(lm, "name_or_path", "") or "")) / "training.json"
    try:
        return int(json.loads(f.read_text()).get("trained_length") or 0) or None
    except (OSError, ValueError, TypeError):
        return None


def model_facts(lm) -> dict:
    mixers = find_mixers(lm, required=False)
    if not mixers:  # no SSM layer (an attention-only LM): nothing to capture
        hidden = int(getattr(lm.config, "hidden_size", 0) or lm.get_input_embeddings().weight.shape[1])
        return {"architecture": type(lm).__name__, "n_layers": 0, "d_inner": hidden, "layer_ids": [],
                "delta_width": 0, "delta_granularity": None, "mixer_family": None, "d_state": 1,
                "dtype": str(next(lm.parameters()).dtype).replace("torch.", ""),
                "n_parameters": int(sum(p.numel() for p in lm.parameters())), "trained_length": trained_length(lm)}
    m0 = mixers[0][1]
    adapter = adapter_for(m0)  # never None: find_mixers refuses mixers without an adapter
    d_state = getattr(m0, "ssm_state_size", None) or getattr(m0, "d_state", None) or int(m0.A_log.shape[-1])
    d_inner = getattr(m0, "intermediate_size", None) or delta_width(m0)  # Mamba-2: heads x head_dim
    return {"architecture": type(lm).__name__, "n_layers": len(mixers), "d_inner": int(d_inner),
            "layer_ids": mixer_layer_ids(lm), "delta_width": delta_width(m0), "delta_granularity": adapter.granularity,
            "mixer_family": adapter.family, "d_state": int(d_state), "dtype": str(next(lm.parameters()).dtype).replace("torch.", ""),
            "n_parameters": int(sum(p.numel() for p in lm.parameters())), "trained_length": trained_length(lm)}


# ---- scan path ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanChoice:
    """What a forward runs: the scan path, the weights' dtype, the autocast dtype (or None) and the device type."""

    scan: str
    dtype: str
    autocast: str | None
    device: str
    kernels_importable: bool

    def context(self):
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(self.device, dtype=getattr(torch, self.autocast))

    def as_dict(self) -> dict:
        return asdict(self)


def kernels_importable() -> bool:
    """``mamba_ssm`` and ``causal_conv1d`` installed and a CUDA device visible (what transformers needs to use them)."""
    return torch.cuda.is_available() and find_spec("mamba_ssm") is not None and find_spec("causal_conv1d") is not None


def set_scan(lm, scan: str | bool = "auto") -> ScanChoice:
    """Choose and switch on the scan path of ``lm`` (see the module docstring); the choice is kept on the model and
    used by :func:`forward_batch`. ``True`` / ``False`` are accepted for ``mambapy`` / ``sequential``."""
    scan = {True: "mambapy", False: "sequential"}.get(scan, scan) if isinstance(scan, bool) else scan
    check_choice("scan", scan, SCANS)
    p = next(lm.parameters())
    device, dtype = p.device.type, p.dtype
    kernels = device == "cuda" and kernels_importable()
    has_mambapy = find_spec("mambapy") is not None
    if scan == "cuda_kernels" and not kernels:
        raise ParameterError("parameter scan='cuda_kernels': needs a CUDA device and the packages mamba_ssm and "
                             "causal_conv1d (pip install mamba-ssm causal-conv1d); use scan: auto")
    if kernels and scan in ("mambapy", "sequential", "chunked"):  # transformers binds its scan to the kernels at import
        raise ParameterError(f"parameter scan={scan!r}: mamba_ssm / causal_conv1d are importable here, and transformers "
                             "then always runs their kernels; use scan: auto (or cuda_kernels), or uninstall them to "
                             f"run the {scan} path")
    mixers = find_mixers(lm, required=False)
    if not mixers:  # an LM without any SSM (e.g. the attention-only sanity code LM): no Δ, no scan to choose
        if scan != "auto":
            raise ParameterError(f"parameter scan={scan!r}: {type(lm).__name__} has no Mamba mixer, so no scan path; "
                                 "allowed: auto")
        choice = ScanChoice("none", str(dtype).replace("torch.", ""), None, device, kernels)
        lm._deltalens_scan = choice
        return choice
    mixer0 = mixers[0][1]
    family = adapter_for(mixer0).family  # find_mixers refuses mixers without an adapter
    offered = FAMILY_SCANS[family]
    if scan != "auto" and scan not in offered:
        raise ParameterError(f"parameter scan={scan!r}: a {family} model ({type(lm).__name__}) has no such path in "
                             f"transformers; allowed: auto, {', '.join(offered)}")
    if scan == "mambapy" and not has_mambapy:
        raise ParameterError("parameter scan='mambapy': the package mambapy is not installed (pip install mambapy)")
    if scan == "auto":
        if kernels and "cuda_kernels" in offered:
            scan = "cuda_kernels"
        elif "chunked" in offered:
            scan = "chunked"
        elif "mambapy" in offered and has_mambapy and (device == "cuda" or delta_width(mixer0) <= 128):
            scan = "mambapy"
        else:
            scan = "sequential"
    on = scan == "mambapy"
    for _, mixer in mixers:
        if hasattr(mixer, "use_mambapy"):
            mixer.use_mambapy = on
    if hasattr(lm.config, "use_mambapy"):
        lm.config.use_mambapy = on
    autocast = str(dtype).replace("torch.", "") if on and dtype in HALF else None
    choice = ScanChoice(scan, str(dtype).replace("torch.", ""), autocast, device, kernels)
    lm._deltalens_scan = choice
    return choice


def scan_of(lm) -> ScanChoice:
    """The scan chosen for ``lm`` (:func:`set_scan`; ``auto`` on first use)."""
    choice = getattr(lm, "_deltalens_scan", None)
    return choice if choice is not None else set_scan(lm, "auto")


def auto_batch_tokens(lm, choice: ScanChoice | None = None, free_bytes: int | None = None) -> int:
    """Padded tokens per forward such that one layer's transient scan tensors fit: per token the scan materialises
    float32 tensors of d_inner x d_state — 3 on the sequential path (discrete A, discrete B, ΔB·u), about 8 on the
    parallel one (those, pscan's two working copies padded to a power of two, the states), 1 with the kernels — plus
    a few d_inner-sized ones. The budget: a share of the free GPU memory, or a fixed amount on the CPU."""
    choice = choice or scan_of(lm)
    f = model_facts(lm)
    per_token = 4 * f["d_inner"] * ({"sequential": 3, "mambapy": 8, "cuda_kernels": 1, "chunked": 2,
                                      "none": 8}[choice.scan] * f["d_state"] + 8)
    if free_bytes is None:
        if choice.device == "cuda":
            free_bytes = int(torch.cuda.mem_get_info(next(lm.parameters()).device)[0] * GPU_FREE_SHARE)
        else:
            free_bytes = CPU_BATCH_BYTES
    return max(16, int(free_bytes // per_token))


def plan_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into batches, longest first, each with rows x longest <= ``batch_tokens`` (a
    sequence longer than that runs alone)."""
    check_int("batch_tokens", batch_tokens, minimum=1)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


# ---- forwards -----------------------------------------------------------------------------------------------------
@dataclass
class ForwardResult:
    stats: list[dict] | None        # per captured layer {stat: (L,) float32 numpy}; None without capture
    target_loss: float              # mean NLL of the target line, nats/token
    exact_match: bool               # greedy decoding reproduces the target line (teacher-forced argmax)
    token_nll: np.ndarray | None    # (L,) NLL of every token given what precedes it, NaN at 0; None unless asked


def _head_nll(head, hidden: torch.Tensor, ids: torch.Tensor, start: int, end: int, slice_len: int = 1024):
    """(NLL (end-start,), argmax-hit (end-start,)) of tokens ``start..end-1`` of one row, ``lm_head`` applied
    ``slice_len`` positions at a time, in the head's dtype (a backbone with ``residual_in_fp32`` returns float32)."""
    nll, hit = [], []
    dtype = head.weight.dtype
    for a in range(start, end, slice_len):
        b = min(end, a + slice_len)
        logits = head(hidden[a - 1:b - 1].to(dtype)).float()
        nll.append(torch.nn.functional.cross_entropy(logits, ids[a:b], reduction="none").cpu())
        hit.append((logits.argmax(-1) == ids[a:b]).cpu())
    if not nll:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    return torch.cat(nll).numpy(), torch.cat(hit).numpy()


HIDDEN_ATTENTION_STATS = HIDDEN_ATTENTION  # the chunk-table contract's names (chunk_columns)


def hidden_attention_queries(encs: list[Encoded], prefix_tokens: int) -> dict[str, list[list[int]]]:
    """Per row, the query positions of the hidden attention (:mod:`deltalens.hidden_attention`): ``prefix_end`` — the
    last ``prefix_tokens`` positions before the target line (where a completion starts; a score a real filter could
    use) — and ``target`` — the positions whose outputs predict the target-line tokens (an upper bound, like
    leave-one-out: it needs the target)."""
    out: dict[str, list[list[int]]] = {"prefix_end": [], "target": []}
    for e in encs:
        t0, t1 = e.target_tokens
        out["prefix_end"].append(list(range(max(0, t0 - prefix_tokens), t0)))
        out["target"].append(list(range(t0 - 1, t1 - 1)))
    return out


def _stats_reducer(encs: list[Encoded], hidden_attention: int, global_masks: dict | None = None):
    """``token_stats`` of Δ, plus with ``hidden_attention`` > 0 the per-token hidden-attention masses (kind 'alpha')
    from both query sets, as ``ha_prefix_end`` / ``ha_target``, plus with ``global_masks`` ({share: (n_layers, D)
    bool}, :mod:`deltalens.global_channels`) the mean Δ over each share's global channels (``global_<pct>``): then one
    reducer per captured layer, in capture order."""
    masses = None
    if hidden_attention:
        from .hidden_attention import hidden_attention_masses

        queries = hidden_attention_queries(encs, hidden_attention)
        masses = lambda inp: hidden_attention_masses(inp, queries, kinds=("alpha",))  # noqa: E731

    def make(layer_masks: dict | None):
        def reduce(inp):
            delta = inp.delta if masses is not None else inp
            out = token_stats(delta)
            if masses is not None:
                m = masses(inp)
                out.update(ha_prefix_end=m["prefix_end:alpha"], ha_target=m["target:alpha"])
            if layer_masks:
                out.update(global_token_stats(delta, layer_masks))
            return out

        return reduce

    if not global_masks:
        return make(None) if masses is not None else token_stats
    from .global_channels import global_token_stats
    n_layers = {np.asarray(m).shape[0] for m in global_masks.values()}
    if len(n_layers) != 1:
        raise ValueError(f"global_masks: the shares' masks cover different numbers of layers {sorted(n_layers)}")
    return [make({q: torch.as_tensor(np.asarray(m)[li]) for q, m in global_masks.items()})
            for li in range(n_layers.pop())]


@torch.no_grad()
def forward_batch(lm, encs: list[Encoded], *, capture: bool = True, layers=None,
                  token_nll: bool | list[bool] = False, hidden_attention: int = 0,
                  global_masks: dict | None = None) -> list[ForwardResult]:
    """One forward over ``encs`` as a right-padded batch (all rows must fit together: see :func:`plan_batches`).
    ``hidden_attention`` > 0 (Mamba-1 families): each layer's statistics also hold the hidden-attention mass per token
    from the last ``hidden_attention`` prefix positions and from the target-line positions. ``global_masks``
    ({share: (n captured layers, D) bool}): each layer's statistics also hold ``global_<pct>``, the mean Δ over that
    share's global channels (LongMamba's rule; :mod:`deltalens.global_channels`)."""
    choice = scan_of(lm)
    want_nll = [token_nll] * len(encs) if isinstance(token_nll, bool) else list(token_nll)
    device = lm.get_input_embeddings().weight.device
    lengths = [int(e.input_ids.shape[1]) for e in encs]
    L = max(lengths)
    ids = torch.zeros(len(encs), L, dtype=torch.long)
    mask = torch.zeros(len(encs), L, dtype=torch.long)
    for r, e in enumerate(encs):
        ids[r, :lengths[r]] = e.input_ids[0]
        mask[r, :lengths[r]] = 1
    ids = ids.to(device)
    kw = {"input_ids": ids, "use_cache": False}
    if min(lengths) < L:
        kw["attention_mask"] = mask.to(device)
    backbone, head = lm.base_model, lm.get_output_embeddings()
    with choice.context():
        if capture:  # statistics stay on the device until the forward is done: no synchronisation per layer
            reduce = _stats_reducer(encs, hidden_attention, global_masks)
            with capture_delta(lm, reduce=reduce, layers=layers, to_cpu=False,
                               ssm_inputs=bool(hidden_attention)) as rec:
                hidden = backbone(**kw).last_hidden_state
            per_layer = [{k: v.float().cpu().numpy() for k, v in d.items()} for d in rec.last()]
        else:
            hidden, per_layer = backbone(**kw).last_hidden_state, None
    out = []
    for r, e in enumerate(encs):
        t0, t1 = e.target_tokens
        row_ids = ids[r]
        if want_nll[r]:
            nll, hit = _head_nll(head, hidden[r], row_ids, 1, lengths[r])
            nll = np.concatenate([[np.nan], nll]).astype(np.float32)
            tgt_nll, tgt_hit = nll[t0:t1], hit[t0 - 1:t1 - 1]
        else:
            nll = None
            tgt_nll, tgt_hit = _head_nll(head, hidden[r], row_ids, t0, t1)
        stats = None if per_layer is None else [{k: v[r, :lengths[r]] for k, v in d.items()} for d in per_layer]
        out.append(ForwardResult(stats, float(np.mean(tgt_nll)), bool(np.all(tgt_hit)), nll))
    return out


def forward_all(lm, encs: list[Encoded], *, batch_tokens: int | str = "auto", capture: bool = True, layers=None,
                token_nll: bool | list[bool] = False, hidden_attention: int = 0,
                global_masks: dict | None = None) -> list[ForwardResult]:
    """:func:`forward_batch` over any number of sequences, grouped by :func:`plan_batches`; results in input order."""
    budget = auto_batch_tokens(lm) if batch_tokens == "auto" else batch_tokens
    want = [token_nll] * len(encs) if isinstance(token_nll, bool) else list(token_nll)
    results: list[ForwardResult | None] = [None] * len(encs)
    for batch in plan_batches([int(e.input_ids.shape[1]) for e in encs], budget):
        for i, res in zip(batch, forward_batch(lm, [encs[i] for i in batch], capture=capture, layers=layers,
                                               token_nll=[want[i] for i in batch], hidden_attention=hidden_attention,
                                               global_masks=global_masks)):
            results[i] = res
    return results  # type: ignore[return-value]


def forward_sample(lm, enc: Encoded, *, capture: bool = True, layers=None, token_nll: bool = False):
    """One sequence: (per-layer token statistics or None, mean NLL of the target line, per-token NLL or None)."""
    r = forward_batch(lm, [enc], capture=capture, layers=layers, token_nll=token_nll)[0]
    return r.stats, r.target_loss, r.token_nll


def target_metrics(lm, enc: Encoded) -> tuple[float, bool]:
    """(mean NLL of the target line, greedy exact match): teacher-forced argmax equal to every target token is
    exactly what greedy decoding would produce, so one forward gives both."""
    r = forward_batch(lm, [enc], capture=False)[0]
    return r.target_loss, r.exact_match


def peak_memory_mb(device) -> float:
    import resource

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def estimate_hours(tokens_per_second: float, remaining_tokens: float) -> float:
    return remaining_tokens / tokens_per_second / 3600 if tokens_per_second > 0 else math.inf
