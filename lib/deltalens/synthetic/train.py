"""Train a tiny Mamba LM on a synthetic task until the answer-position cross-entropy is below a target.

The stopping rule is checked on a fixed held-out batch (fresh sequences, never trained on) every ``eval_every``
steps: training stops when that loss is below ``target_loss`` (the thesis' criterion, 1e-4), or at ``max_steps`` /
``max_seconds``, in which case ``reached_target`` is False and the result says so plainly.

Checkpoints: ``<checkpoint_root>/<task>-<hash of every parameter>/`` holds ``model.safetensors``, ``config.json``
(all parameters, versions, outcome) and ``curve.csv``; a later run with the same parameters loads it instead of
training again.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..core.params import ParameterError, check_float, check_int
from .models import MambaLM, ModelConfig, build_model, load_model, save_model
from .tasks import Task, TaskBatch


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    lr: float = 5e-3
    min_lr_ratio: float = 0.1  # cosine decay from lr to lr * min_lr_ratio over decay_steps, then constant
    warmup_steps: int = 100
    decay_steps: int = 1500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    target_loss: float = 1e-4
    max_steps: int = 6000
    max_seconds: float = 290.0
    eval_every: int = 50
    eval_batch_size: int = 256
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        where = "train"
        for name in ("batch_size", "warmup_steps", "decay_steps", "max_steps", "eval_every", "eval_batch_size"):
            check_int(name, getattr(self, name), minimum=1, where=where)
        check_int("seed", self.seed, minimum=0, where=where)
        check_int("threads", self.threads, minimum=0, where=where)
        for name in ("lr", "target_loss", "max_seconds"):
            check_float(name, getattr(self, name), minimum=0, exclusive=True, where=where)
        for name in ("min_lr_ratio", "weight_decay", "grad_clip"):
            check_float(name, getattr(self, name), minimum=0, where=where)

    def lr_factor(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps)
        progress = min(step, self.decay_steps) / self.decay_steps
        return warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainResult:
    model: MambaLM
    curve: pd.DataFrame  # step, seconds, lr, train_loss, eval_loss (NaN between evaluations), eval_accuracy
    reached_target: bool
    steps: int
    seconds: float  # wall time of the training run that produced the checkpoint
    final_eval_loss: float
    reused: bool
    checkpoint: Path | None

    def summary(self) -> str:
        verdict = (
            f"reached the target loss in {self.steps} steps ({self.seconds:.0f} s)"
            if self.reached_target
            else f"did NOT reach the target loss: stopped after {self.steps} steps ({self.seconds:.0f} s)"
        )
        origin = f" [reused checkpoint {self.checkpoint}]" if self.reused else ""
        return f"{verdict}; held-out answer loss {self.final_eval_loss:.2e}{origin}"


def answer_loss(logits: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    return F.cross_entropy(logits[batch.answer], batch.targets[batch.answer])


@torch.no_grad()
def evaluate(model: MambaLM, batch: TaskBatch, chunk: int = 256) -> dict[str, float]:
    """Answer-position loss, per-answer accuracy and whole-sequence accuracy (all answers right)."""
    was_training = model.training
    model.eval()
    losses, correct, seq_ok = [], [], []
    for s in range(0, batch.inputs.shape[0], chunk):
        sl = slice(s, s + chunk)
        logits = model(batch.inputs[sl])
        ans = batch.answer[sl]
        tgt = batch.targets[sl]
        losses.append(F.cross_entropy(logits[ans], tgt[ans], reduction="sum"))
        hit = (logits.argmax(-1) == tgt) | ~ans
        correct.append(hit[ans])
        seq_ok.append(hit.all(dim=1))
    model.train(was_training)
    n = int(batch.answer.sum())
    return {
        "loss": float(torch.stack(losses).sum() / n),
        "accuracy": float(torch.cat(correct).float().mean()),
        "sequence_accuracy": float(torch.cat(seq_ok).float().mean()),
    }


def run_key(task: Task, model_cfg: ModelConfig, train_cfg: TrainConfig) -> str:
    blob = json.dumps({"task": task.params(), "model": asdict(model_cfg), "train": asdict(train_cfg)}, sort_keys=True)
    return f"{task.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def train(
    task: Task,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    checkpoint_root: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or reuse the checkpoint of an identical earlier run)."""
    if model_cfg.vocab_size != task.vocab_size:
        raise ParameterError(
            f"model: vocab_size={model_cfg.vocab_size} does not match task {task.name!r} (vocab_size={task.vocab_size})"
        )
    ckpt = Path(checkpoint_root) / run_key(task, model_cfg, train_cfg) if checkpoint_root is not None else None
    if ckpt is not None and (ckpt / "model.safetensors").is_file() and (ckpt / "curve.csv").is_file():
        meta = json.loads((ckpt / "config.json").read_text())
        return TrainResult(
            model=load_model(ckpt),
            curve=pd.read_csv(ckpt / "curve.csv"),
            reached_target=meta["outcome"]["reached_target"],
            steps=meta["outcome"]["steps"],
            seconds=meta["outcome"]["seconds"],
            final_eval_loss=meta["outcome"]["final_eval_loss"],
            reused=True,
            checkpoint=ckpt,
        )

    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    model = build_model(model_cfg, seed=train_cfg.seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, train_cfg.lr_factor)
    g_train = torch.Generator().manual_seed(train_cfg.seed)
    held_out = task.draw_batch(train_cfg.eval_batch_size, torch.Generator().manual_seed(10_000 + train_cfg.seed))

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    reached, step, last_eval = False, 0, {"loss": float("nan")}
    bar = tqdm(total=train_cfg.max_steps, desc=f"train {task.name}", disable=not progress, mininterval=2.0)
    while step < train_cfg.max_steps:
        batch = task.draw_batch(train_cfg.batch_size, g_train)
        loss = answer_loss(model(batch.inputs), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        row = {"step": step, "seconds": time.perf_counter() - start, "lr": opt.param_groups[0]["lr"], "train_loss": loss.item()}
        if step % train_cfg.eval_every == 0 or step == train_cfg.max_steps:
            last_eval = evaluate(model, held_out)
            row.update(eval_loss=last_eval["loss"], eval_accuracy=last_eval["accuracy"])
            bar.set_postfix(loss=f"{last_eval['loss']:.1e}", acc=f"{last_eval['accuracy']:.3f}")
            if last_eval["loss"] < train_cfg.target_loss:
                reached = True
        rows.append(row)
        if reached or time.perf_counter() - start > train_cfg.max_seconds:
            break
    bar.close()
    seconds = time.perf_counter() - start
    if "eval_loss" not in rows[-1]:
        last_eval = evaluate(model, held_out)
        rows[-1].update(eval_loss=last_eval["loss"], eval_accuracy=last_eval["accuracy"])
    curve = pd.DataFrame(rows, columns=["step", "seconds", "lr", "train_loss", "eval_loss", "eval_accuracy"])
    model.eval()
    result = TrainResult(model, curve, reached, step, seconds, last_eval["loss"], reused=False, checkpoint=ckpt)
    if ckpt is not None:
        _save_checkpoint(result, ckpt, task, train_cfg)
    return result


def _save_checkpoint(result: TrainResult, ckpt: Path, task: Task, train_cfg: TrainConfig) -> None:
    """Write into a temporary directory, then rename: a killed run never leaves a checkpoint that looks complete."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    extra = {
        "task": task.params(),
        "train": asdict(train_cfg),
        "versions": {"torch": torch.__version__, "mambapy": version("mambapy")},
        "outcome": {
            "reached_target": result.reached_target,
            "steps": result.steps,
            "seconds": result.seconds,
            "final_eval_loss": result.final_eval_loss,
        },
    }
    save_model(result.model, tmp, extra)
    result.curve.to_csv(tmp / "curve.csv", index=False)
    if ckpt.exists():
        import shutil

        shutil.rmtree(ckpt)
    tmp.rename(ckpt)
