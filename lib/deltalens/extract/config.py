"""What an extraction run does: its parameters (:class:`ExtractConfig`, checked), its shard, the samples it takes,
and the ways to get a config — from a parameter mapping (a params YAML, the CLI), from a notebook's parameters, or
back from a run folder's ``run.json`` (the layout policy a later step must reuse, e.g. the analysis' filtering)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..context.subsets import hash_subset
from ..core.chunk_columns import RUN_JSON
from ..core.params import ParameterError, check_bool, check_choice, check_int
from ..core.paths import resolve
from ..lm.loading import DTYPES, SCANS
from ..lm.prompts import ORDERS, TRUNCATION, LayoutPolicy

NOTEBOOK_ONLY = {"example_sample", "example_layers", "figures_dir", "progress"}  # notebook 03's parameters beyond the config


@dataclass
class ExtractConfig:
    model: str = "models/code-lm-hybrid-attnfirst"  # local path or hub id (e.g. tiiuae/falcon-mamba-7b)
    dataset_dir: str = "data/processed/context"
    out_dir: str = "data/processed/delta/code-lm-hybrid-attnfirst/context_first"
    order: str = "context_first"            # context_first | query_first
    query_chars: int = 800                  # query_first: characters of the prefix tail put first
    max_tokens: int = 8192
    truncation: str = "drop_chunks"         # drop_chunks (leading chunks first) | left (keep the last tokens) | error
    layers: list[int] | None = None         # None = every SSM layer; else indices 0..n-1 over the SSM layers
    split: str | None = None                # None = both splits
    max_samples: int | None = None          # a fixed pseudo-random subset (by hash of the sample id; None = all)
    shard: str = "0/1"                      # i/n: this run takes samples k with k % n == i
    leave_one_out: bool = False             # one more forward per chunk: loss without it
    loo_samples: int | None = None          # leave-one-out on this many of the samples only (hash subset; None = all)
    loo_split: str | None = None            # leave-one-out only on the samples of this split (None = every split)
    save_token_stats: bool = False          # per-token statistics per sample (safetensors)
    dtype: str = "float32"                  # float32 | bfloat16 | float16 | half (bf16 where native, else fp16) | auto
    device: str = "cpu"                     # cpu | cuda | cuda:1 | auto (cuda when available)
    device_map: str | None = None           # "auto" spreads one model over several GPUs (accelerate)
    allow_download: bool = False            # hub ids: try the hub after the local cache (Kaggle: true)
    scan: str = "auto"                      # auto | cuda_kernels | mambapy | sequential | chunked (Mamba-2; lm_runtime)
    batch_tokens: int | str = "auto"        # padded tokens per forward (auto: from the free memory)
    hidden_attention: int = 0               # > 0: per chunk, the hidden-attention mass (Ali et al.) from the last k
                                            # prefix positions and from the target line (Mamba-1 families only)
    global_channels: list[float] | None = None  # LongMamba's rule: shares of each layer's slowest-decaying channels
                                            # (e.g. [0.05, 0.1, 0.25]); per chunk the mean Δ over them
    global_calibration: int = 32            # dev prompts on which the channels' decay is measured (never test)

    @property
    def layout(self) -> LayoutPolicy:
        """How a sample becomes tokens (order, query characters, token limit, truncation): what
        :func:`deltalens.lm.prompts.encode` takes."""
        return LayoutPolicy(self.order, self.query_chars, self.max_tokens, self.truncation)

    def check(self) -> "ExtractConfig":
        check_choice("order", self.order, ORDERS)
        check_choice("truncation", self.truncation, TRUNCATION)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("scan", self.scan, SCANS)
        check_int("max_tokens", self.max_tokens, minimum=16)
        check_int("query_chars", self.query_chars, minimum=0)
        check_int("hidden_attention", self.hidden_attention, minimum=0)
        check_int("global_calibration", self.global_calibration, minimum=1)
        if self.global_channels is not None:
            ok = isinstance(self.global_channels, list) and self.global_channels and all(
                isinstance(q, (int, float)) and not isinstance(q, bool) and 0 < q <= 1 for q in self.global_channels)
            if not ok or len(set(self.global_channels)) != len(self.global_channels):
                raise ParameterError(f"parameter global_channels={self.global_channels!r}: expected null or a list of "
                                     "distinct shares 0 < share <= 1, e.g. [0.05, 0.1, 0.25]")
        if self.batch_tokens != "auto":
            check_int("batch_tokens", self.batch_tokens, minimum=1)
        for name in ("leave_one_out", "save_token_stats", "allow_download"):
            check_bool(name, getattr(self, name))
        for name in ("model", "dataset_dir", "out_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ParameterError(f"parameter {name}={getattr(self, name)!r}: expected a non-empty path")
        check_choice("device_map", self.device_map, (None, "auto", "balanced", "balanced_low_0", "sequential"))
        if not isinstance(self.device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device):
            raise ParameterError(f"parameter device={self.device!r} is not allowed; allowed: cpu, cuda, cuda:N, auto")
        for name in ("split", "loo_split"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ParameterError(f"parameter {name}={getattr(self, name)!r}: expected null, 'dev' or 'test'")
        for name in ("max_samples", "loo_samples"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        if self.layers is not None and (not isinstance(self.layers, list) or not all(isinstance(i, int) for i in self.layers)):
            raise ParameterError(f"parameter layers={self.layers!r}: expected null or a list of layer indices")
        parse_shard(self.shard)
        return self

    def run_key(self) -> dict:
        """What must agree between a run folder and a resumed / sibling-shard run."""
        d = asdict(self)
        for k in ("shard", "device", "device_map", "allow_download", "out_dir", "dataset_dir", "scan", "batch_tokens"):
            d.pop(k)
        return d


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ParameterError(f"parameter shard={spec!r}: expected 'i/n' with 0 <= i < n, e.g. '0/1' or '1/4'")
    return int(m.group(1)), int(m.group(2))


def process_shard(shard: str, environ=os.environ) -> tuple[int, int]:
    """Combine the ``i/n`` shard with the data-parallel process of ``accelerate launch`` / ``torchrun``
    (``RANK`` / ``WORLD_SIZE``): process r of w takes sub-shard ``i*w + r`` of ``n*w``."""
    i, n = parse_shard(shard)
    world, rank = int(environ.get("WORLD_SIZE", 1)), int(environ.get("RANK", 0))
    return i * world + rank, n * world


def select_samples(ds, split: str | None, max_samples: int | None) -> list[str]:
    """The samples of ``split`` (None: all), ``max_samples`` of them as a :func:`hash_subset`, in dataset order."""
    s = ds.samples if split is None else ds.samples[ds.samples["split"] == split]
    if split is not None and s.empty:
        raise ParameterError(f"parameter split={split!r}: no samples in it (splits: {sorted(ds.samples['split'].unique())})")
    ids = list(s["sample_id"])
    keep = hash_subset(ids, max_samples)
    return [i for i in ids if i in keep]


def config_from_params(params: dict, **overrides) -> ExtractConfig:
    """An ExtractConfig from a parameter mapping (the notebook's parameters / a params YAML); unknown keys are an
    error naming them, keys that only the notebook uses (figures, examples, progress) are ignored."""
    fields = set(ExtractConfig.__dataclass_fields__)
    merged = {**params, **{k: v for k, v in overrides.items() if v is not None}}
    if "use_mambapy" in merged:
        raise ParameterError(f"parameter use_mambapy={merged['use_mambapy']!r} was replaced by scan: auto | "
                             "cuda_kernels | mambapy | sequential (use_mambapy: true -> scan: mambapy, false -> "
                             "scan: sequential)")
    unknown = sorted(set(merged) - fields - NOTEBOOK_ONLY)
    if unknown:
        raise ParameterError(f"unknown extraction parameter(s) {unknown}; allowed: {sorted(fields | NOTEBOOK_ONLY)}")
    return ExtractConfig(**{k: v for k, v in merged.items() if k in fields}).check()


def config_from_notebook(namespace: dict) -> ExtractConfig:
    """The ExtractConfig of notebook 03: its parameters are the notebook's globals named like the config's fields
    (everything else in the namespace is not a parameter)."""
    return config_from_params({k: v for k, v in namespace.items() if k in ExtractConfig.__dataclass_fields__})


def config_from_run(run_dir: str | Path) -> ExtractConfig:
    """The ExtractConfig an extraction run folder recorded in its ``run.json`` (fields this version does not know are
    left out): the layout policy (order, token limit, truncation ...) that the run's prompts were made with."""
    f = resolve(run_dir) / RUN_JSON
    if not f.is_file():
        raise FileNotFoundError(f"{f} is missing: {run_dir} is not an extraction run folder (or nothing ran there)")
    recorded = json.loads(f.read_text())["config"]
    return ExtractConfig(**{k: v for k, v in recorded.items() if k in ExtractConfig.__dataclass_fields__})
