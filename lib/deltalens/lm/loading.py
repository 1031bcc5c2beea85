"""Load a pretrained Mamba-family LM for Δ: its dtype, device and scan path, and the facts a run records about it.

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
"""

from __future__ import annotations

import os
import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path

import torch

from ..core.params import ParameterError, check_choice
from ..core.paths import resolve
from ..delta.adapters import adapter_for
from ..delta.capture import delta_width, find_mixers, mixer_layer_ids

DTYPES = ("float32", "bfloat16", "float16", "half", "auto")
SCANS = ("auto", "cuda_kernels", "mambapy", "sequential", "chunked")
MAMBA2_FAMILIES = ("mamba2", "zamba2", "falcon_h1", "nemotron_h", "granitemoehybrid", "bamba")
FAMILY_SCANS = {"mambapy": ("mambapy",), "mamba": ("cuda_kernels", "mambapy", "sequential"),
                "falcon_mamba": ("cuda_kernels", "mambapy", "sequential"), "jamba": ("cuda_kernels", "sequential"),
                "zamba": ("cuda_kernels", "sequential"), **{f: ("cuda_kernels", "chunked") for f in MAMBA2_FAMILIES}}
HALF = (torch.bfloat16, torch.float16)


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
