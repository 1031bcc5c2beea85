"""The training section of the code LM's parameters (``params/codelm/*.yaml``, ``train:``): optimizer, schedule,
sequence length, budgets. Its own module: :mod:`.params` assembles every section and :mod:`.train` runs a training
from those parameters, so ``train`` imports ``params`` and ``params`` must not import ``train`` (no import cycle)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..core.params import ParameterError, check_float, check_int

DEVICES = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class CodeLMTrainConfig:
    """How the code LM is trained: sized in steps of token windows, with a held-out loss. Not the synthetic
    experiments' ``deltalens.synthetic.train.TrainConfig``, which trains until a target answer loss on task batches."""

    seq_len: int = 512
    batch_size: int = 4  # sequences per optimizer step
    micro_batch_size: int = 1  # sequences per forward/backward (gradients accumulate): on a CPU the scan's
    # (micro_batch, seq_len, d_inner, d_state) float32 tensors are far faster while they fit the L3 cache
    lr: float = 2e-3
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1  # on matrices (Linear, embedding, conv) only, not on norms, biases, A_log, D
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    max_steps: int = 1000
    max_minutes: float = 15.0
    eval_every: int = 100
    eval_tokens: int = 32768  # held-out tokens per evaluation (whole windows of seq_len)
    eval_batch_size: int = 1
    threads: int = 2  # torch CPU threads (0: leave torch's default)
    device: str = "cpu"  # cpu, cuda or auto (cuda when available): where the model trains (float32 either way);
    # the saved model is moved to the CPU, checked against the trained one there, and records the device

    def __post_init__(self) -> None:
        where = "train"
        for name in ("seq_len", "batch_size", "micro_batch_size", "max_steps", "eval_every", "eval_tokens",
                     "eval_batch_size"):
            check_int(name, getattr(self, name), minimum=1, where=where)
        if self.batch_size % self.micro_batch_size:
            raise ParameterError(f"{where}: parameter micro_batch_size={self.micro_batch_size} does not divide "
                                 f"batch_size={self.batch_size}; allowed: a divisor of batch_size")
        for name in ("warmup_steps", "threads"):
            check_int(name, getattr(self, name), minimum=0, where=where)
        if self.device not in DEVICES:
            raise ParameterError(f"{where}: parameter device={self.device!r} is not allowed; allowed: {list(DEVICES)}")
        for name in ("lr", "max_minutes"):
            check_float(name, getattr(self, name), minimum=0, exclusive=True, where=where)
        for name in ("min_lr_ratio", "weight_decay", "grad_clip"):
            check_float(name, getattr(self, name), minimum=0, where=where)
        if self.min_lr_ratio > 1:
            raise ParameterError(f"{where}: parameter min_lr_ratio={self.min_lr_ratio} is out of range; allowed: 0..1")
        b = self.betas
        if not (isinstance(b, (list, tuple)) and len(b) == 2
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in b)):
            raise ParameterError(f"{where}: parameter betas={b!r}; allowed: two numbers in [0, 1)")
        object.__setattr__(self, "betas", (float(b[0]), float(b[1])))

    def lr_factor(self, step: int, elapsed_s: float = 0.0) -> float:
        """Warmup then cosine over ``max_steps`` — by steps only, so the schedule (and the model) never depends on
        the machine's speed; ``max_minutes`` only stops a run early (recorded as ``stopped_by``)."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        progress = min(1.0, step / self.max_steps)
        return warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def resolved_device(self) -> str:
        """'cpu' or 'cuda' (``auto``: cuda when torch sees one); ``cuda`` without a GPU is refused before any work."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ParameterError("train: parameter device='cuda' but torch sees no CUDA device here; use cpu or auto")
        return self.device
