"""Part 1 of the study, as functions the notebook calls: parameters -> trained model -> Δ -> metrics.

The questions, per layer and per Δ score, on held-out sequences:
  * population ``context``: over all context tokens (noise and data), does Δ rank important tokens first?
  * population ``data``: over the content tokens only, does Δ rank the important ones first? For Selective Copying
    every data token is important (undefined, reported as NaN); for Query Copying only the query can tell.
and what the controls (token identity; CatBoost on the token and its short-conv window) achieve on the same tokens.
Every setting is trained with several seeds (:func:`run_seed` per seed); ``synthetic_report`` turns the runs into
metrics, the across-seed summary and the generated conclusions.

Why one module slightly above the ~300-line guideline: the experiment's parameters, its runs per seed and the
tables the notebook draws from one run form one chain (each function takes the previous one's output); the words
and the across-seed summary already live in :mod:`deltalens.synthetic.report`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.delta_stats import DELTA_SCORES
from ..core.metrics import auc, bootstrap_auc, catboost_probe, roc
from ..core.params import ParameterError, check_int, check_keys
from ..delta.capture import capture_delta
from ..delta.scores import delta_scores, identity_rate, window_features
from .models import MambaLM, ModelConfig
from .tasks import Task, TaskBatch, make_task
from .train import TrainConfig, TrainResult, evaluate, train

POPULATIONS = ("context", "data")


@dataclass(frozen=True)
class AnalysisConfig:
    n_train_sequences: int = 256  # sequences whose tokens train the probes (never seen in training the model)
    n_test_sequences: int = 256  # held-out sequences for every reported number
    catboost_iterations: int = 200
    window: int = -1  # tokens of context for the control; -1 = the model's d_conv - 1 (its short-conv window)
    length_multipliers: tuple[int, ...] = (1, 4)  # accuracy at these multiples of the training length
    bootstrap: int = 200  # bootstrap resamples (of sequences) for AUC intervals; 0 = none
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("n_train_sequences", "n_test_sequences", "catboost_iterations"):
            check_int(name, getattr(self, name), minimum=2, where="analysis")
        check_int("window", self.window, minimum=-1, where="analysis")
        check_int("bootstrap", self.bootstrap, minimum=0, where="analysis")
        check_int("seed", self.seed, minimum=0, where="analysis")
        if not isinstance(self.length_multipliers, (list, tuple)) or not self.length_multipliers:
            raise ParameterError(f"analysis: parameter length_multipliers={self.length_multipliers!r}; allowed: a non-empty list of integers >= 1")
        for m in self.length_multipliers:
            check_int("length_multipliers[]", m, minimum=1, where="analysis")


@dataclass(frozen=True)
class Experiment:
    name: str
    task: Task
    model: ModelConfig
    train: TrainConfig
    analysis: AnalysisConfig
    checkpoint_root: str
    figures_root: str
    seeds: tuple[int, ...] = (0,)  # training seeds: one model per seed, the same analysis sequences for all

    def train_for(self, seed: int) -> TrainConfig:
        """The training configuration of one seed (its checkpoint is keyed by every parameter, the seed included)."""
        return replace(self.train, seed=seed)

    @property
    def figures_dir(self) -> Path:
        from ..core.paths import resolve

        return resolve(self.figures_root) / self.name

    def params(self) -> dict[str, Any]:
        return {
            "experiment": self.name,
            "task": self.task.params(),
            "model": asdict(self.model),
            "train": asdict(self.train),
            "analysis": asdict(self.analysis),
            "seeds": list(self.seeds),
        }


def make_experiment(
    experiment: str,
    task: str,
    task_params: dict | None = None,
    model: dict | None = None,
    train: dict | None = None,
    analysis: dict | None = None,
    checkpoint_root: str = "data/models/synthetic",
    figures_root: str = "reports/figures/synthetic",
    seeds: list[int] | None = None,
) -> Experiment:
    """Validate every parameter (as papermill passes them) before anything is trained.

    ``seeds``: the training seeds (default ``[0]``); each trains its own model (checkpoints reused per seed). The seed
    is given here, not as ``train.seed``, so that one parameter file names every run it stands for."""
    if not isinstance(experiment, str) or not experiment or "/" in experiment:
        raise ParameterError(f"parameter experiment={experiment!r}; allowed: a non-empty name without '/'")
    if task_params is not None and not isinstance(task_params, dict):
        raise ParameterError(f"parameter task_params={task_params!r} has type {type(task_params).__name__}; allowed: a mapping")
    t = make_task(task, **(task_params or {}))
    m = check_keys("model", model or {}, [f for f in ModelConfig.__dataclass_fields__ if f != "vocab_size"])
    tr = check_keys("train", train or {}, TrainConfig.__dataclass_fields__)
    an = dict(check_keys("analysis", analysis or {}, AnalysisConfig.__dataclass_fields__))
    if "length_multipliers" in an and isinstance(an["length_multipliers"], list):
        an["length_multipliers"] = tuple(an["length_multipliers"])
    seeds = check_seeds(seeds, tr)
    return Experiment(
        name=experiment,
        task=t,
        model=ModelConfig(vocab_size=t.vocab_size, **m),
        train=TrainConfig(**tr),
        analysis=AnalysisConfig(**an),
        checkpoint_root=checkpoint_root,
        figures_root=figures_root,
        seeds=seeds,
    )


def check_seeds(seeds: Any, train_params: dict) -> tuple[int, ...]:
    if seeds is None:
        return (int(train_params.get("seed", 0)),)
    if "seed" in train_params:
        raise ParameterError(f"parameters seeds={seeds!r} and train.seed={train_params['seed']!r} are both given; "
                             "allowed: the list `seeds` only")
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ParameterError(f"parameter seeds={seeds!r}; allowed: a non-empty list of distinct integers >= 0")
    for s in seeds:
        check_int("seeds[]", s, minimum=0, where="synthetic")
    if len(set(seeds)) != len(seeds):
        raise ParameterError(f"parameter seeds={seeds!r} repeats a seed; allowed: distinct integers >= 0")
    return tuple(int(s) for s in seeds)


def train_experiment(exp: Experiment, seed: int | None = None, progress: bool = True) -> TrainResult:
    """Train the model of one seed (default: the first), or reuse its checkpoint."""
    from ..core.paths import resolve

    cfg = exp.train_for(exp.seeds[0] if seed is None else seed)
    return train(exp.task, exp.model, cfg, checkpoint_root=resolve(exp.checkpoint_root), progress=progress)


@dataclass
class SeedRun:
    """Everything measured on the model of one training seed (the analysis sequences are the same for every seed)."""

    seed: int
    result: TrainResult
    accuracy: pd.DataFrame  # per length multiplier
    aucs: pd.DataFrame  # Δ scores on the test sequences, with bootstrap intervals
    dev_aucs: pd.DataFrame  # the same on the dev sequences (the probes' training sequences): they choose
    probes: pd.DataFrame
    probas: dict[str, dict[str, np.ndarray]]
    train_delta: "DeltaSet"
    test_delta: "DeltaSet"


def run_seed(exp: Experiment, seed: int, progress: bool = True) -> SeedRun:
    """Train (or reuse) the model of ``seed``, then measure accuracy, Δ AUCs (dev and test) and the probes."""
    result = train_experiment(exp, seed=seed, progress=progress)
    acc = accuracy_by_length(result.model, exp)
    train_set, test_set = sample_sets(exp)
    train_delta, test_delta = delta_on(result.model, train_set), delta_on(result.model, test_set)
    aucs = auc_table(test_delta, exp)
    dev_aucs = auc_table(train_delta, exp, bootstrap=False)
    probes, probas = probe_table(train_delta, test_delta, exp)
    return SeedRun(seed, result, acc, aucs, dev_aucs, probes, probas, train_delta, test_delta)


# ---------------------------------------------------------------------------------------------------------------


@dataclass
class DeltaSet:
    """Held-out sequences with their Δ: ``delta`` is (n_layers, B, L, d_inner); ``residual`` (n_layers, B, L, d_model)
    is each mixer's input (the residual stream after the block's norm), ``bc`` (n_layers, B, L, 2 * d_state) the
    scan's B and C (the controls that say whether Δ is special among the mixer's internals)."""

    batch: TaskBatch
    delta: torch.Tensor
    residual: torch.Tensor | None = None
    bc: torch.Tensor | None = None

    def scores(self) -> dict[str, torch.Tensor]:  # name -> (n_layers, B, L)
        return delta_scores(self.delta)


@torch.no_grad()
def delta_on(model: MambaLM, batch: TaskBatch, chunk: int = 128) -> DeltaSet:
    """Δ, the mixers' inputs and the scan's B / C of every sequence, through hooks (removed afterwards)."""
    from ..delta.capture import find_mixers

    model.eval()
    deltas, residuals, bcs = [], [], []
    mixers = [m for _, m in find_mixers(model)]
    for s in range(0, batch.inputs.shape[0], chunk):
        seen: list[torch.Tensor] = []
        handles = [m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().float())) for m in mixers]
        try:
            with capture_delta(model, reduce=lambda inp: (inp.delta, torch.cat([inp.B, inp.C], -1)),
                               ssm_inputs=True) as rec:
                model(batch.inputs[s : s + chunk])
        finally:
            for h in handles:
                h.remove()
        deltas.append(torch.stack([d for d, _ in rec.last()]))
        bcs.append(torch.stack([bc for _, bc in rec.last()]))
        residuals.append(torch.stack(seen[-len(mixers):]))
    return DeltaSet(batch, torch.cat(deltas, dim=1), torch.cat(residuals, dim=1), torch.cat(bcs, dim=1))


def sample_sets(exp: Experiment) -> tuple[TaskBatch, TaskBatch]:
    """Probe-training and test sequences, from generators disjoint from the model's training stream."""
    a = exp.analysis
    g = torch.Generator().manual_seed(1_000_003 * (a.seed + 1))
    return exp.task.draw_batch(a.n_train_sequences, g), exp.task.draw_batch(a.n_test_sequences, g)


def accuracy_by_length(model: MambaLM, exp: Experiment) -> pd.DataFrame:
    rows = []
    for mult in exp.analysis.length_multipliers:
        task = exp.task.with_seq_len(exp.task.seq_len * mult)
        batch = task.draw_batch(exp.analysis.n_test_sequences, torch.Generator().manual_seed(77 + mult))
        r = evaluate(model, batch, chunk=64)
        rows.append({"length_multiplier": mult, "seq_len": task.total_len, **r})
    return pd.DataFrame(rows)


def _population(batch: TaskBatch, name: str) -> torch.Tensor:
    return batch.context if name == "context" else batch.data


def _flat(x: torch.Tensor | np.ndarray, mask: torch.Tensor) -> np.ndarray:
    x = torch.as_tensor(x)
    return x[mask].numpy() if x.dim() == mask.dim() else x[mask].reshape(int(mask.sum()), -1).numpy()


def auc_table(test: DeltaSet, exp: Experiment, bootstrap: bool = True) -> pd.DataFrame:
    """ROC-AUC of every Δ score, per layer and population, with bootstrap intervals over sequences (``bootstrap``;
    off for the dev sequences, which only choose)."""
    scores = test.scores()
    seq_id = torch.arange(test.batch.inputs.shape[0])[:, None].expand_as(test.batch.inputs)
    rows = []
    for pop in POPULATIONS:
        mask = _population(test.batch, pop)
        y = _flat(test.batch.important, mask)
        groups = _flat(seq_id, mask)
        for name in DELTA_SCORES:
            for layer in range(scores[name].shape[0]):
                s = _flat(scores[name][layer], mask)
                value = auc(y, s)
                lo, hi = (bootstrap_auc(y, s, groups, n=exp.analysis.bootstrap)
                          if bootstrap and exp.analysis.bootstrap and not np.isnan(value) else (np.nan, np.nan))
                rows.append({"population": pop, "layer": layer, "score": name, "auc": value, "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def roc_curves(test: DeltaSet, probes: dict[str, Any], population: str = "context") -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """name -> (fpr, tpr, auc) for each Δ score and layer, plus the control and probe scores."""
    mask = _population(test.batch, population)
    y = _flat(test.batch.important, mask)
    out = {}
    for name, per_layer in test.scores().items():
        for layer in range(per_layer.shape[0]):
            s = _flat(per_layer[layer], mask)
            if not np.isnan(a := auc(y, s)):
                out[f"layer {layer} Δ {name}"] = (*roc(y, s), a)
    for name, proba in probes.get(population, {}).items():
        if not np.isnan(a := auc(y, proba)):
            out[name] = (*roc(y, proba), a)
    return out


PROBE_KINDS = ("control", "delta", "delta_plus_control", "internal", "query_control")
"""What a probe reads, as a field of its row (its label is for display): the controls (token identity, token + short
window), Δ, Δ + the control, the mixer's other internals (residual stream, B and C), the query + token."""


def probe_table(train_set: DeltaSet, test: DeltaSet, exp: Experiment) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """CatBoost on Δ features vs on control features (token + short-conv window), per population.

    Returns the table and, per population, the held-out probabilities of each probe (for ROC curves)."""
    window = exp.model.d_conv - 1 if exp.analysis.window < 0 else exp.analysis.window
    rows, probas = [], {}
    for pop in POPULATIONS:
        m_tr, m_te = _population(train_set.batch, pop), _population(test.batch, pop)
        y_tr, y_te = _flat(train_set.batch.important, m_tr), _flat(test.batch.important, m_te)
        d_tr = _flat(train_set.delta.permute(1, 2, 0, 3), m_tr)  # (tokens, n_layers * d_inner)
        d_te = _flat(test.delta.permute(1, 2, 0, 3), m_te)
        w_tr = _flat(window_features(train_set.batch.inputs, window), m_tr)
        w_te = _flat(window_features(test.batch.inputs, window), m_te)
        ident = identity_rate(_flat(train_set.batch.inputs, m_tr), y_tr, _flat(test.batch.inputs, m_te), exp.task.vocab_size)
        probas[pop] = {"control: P(important | token)": ident}
        rows.append({"population": pop, "features": "control: token identity rate", "kind": "control",
                     "accuracy": np.nan, "auc": auc(y_te, ident), "majority_accuracy": np.nan})
        cat_w = list(range(w_tr.shape[1]))
        feature_sets = {  # label -> (train features, test features, categorical columns, kind: PROBE_KINDS)
            f"CatBoost on Δ ({d_tr.shape[1]} channels)": (d_tr, d_te, None, "delta"),
            f"CatBoost control: token + {window} previous": (w_tr, w_te, cat_w, "control"),
            "CatBoost on Δ + control": (_mixed_frame(w_tr, d_tr), _mixed_frame(w_te, d_te), cat_w, "delta_plus_control"),
        }
        # is Δ special among the mixer's internals? the same probe on its input and on the scan's B and C
        for label, tr_x, te_x in (("the residual stream (mixer input)", train_set.residual, test.residual),
                                  ("B and C", train_set.bc, test.bc)):
            if tr_x is not None and te_x is not None:
                xtr, xte = _flat(tr_x.permute(1, 2, 0, 3), m_tr), _flat(te_x.permute(1, 2, 0, 3), m_te)
                feature_sets[f"CatBoost on {label} ({xtr.shape[1]} dims)"] = (xtr, xte, None, "internal")
        if exp.task.name == "query_copying":  # the task is a function of two visible tokens: the query and the token
            q_tr = np.stack([_flat(train_set.batch.inputs[:, :1].expand_as(train_set.batch.inputs), m_tr),
                             _flat(train_set.batch.inputs, m_tr)], 1)
            q_te = np.stack([_flat(test.batch.inputs[:, :1].expand_as(test.batch.inputs), m_te),
                             _flat(test.batch.inputs, m_te)], 1)
            feature_sets["CatBoost control: query + token"] = (q_tr, q_te, [0, 1], "query_control")
        for name, (xtr, xte, cats, kind) in feature_sets.items():
            r = catboost_probe(xtr, y_tr, xte, y_te, cat_features=cats, iterations=exp.analysis.catboost_iterations, seed=exp.analysis.seed)
            probas[pop][name] = r.proba
            rows.append({"population": pop, "features": name, "kind": kind, "accuracy": r.accuracy, "auc": r.auc,
                         "majority_accuracy": r.majority_accuracy})
    return pd.DataFrame(rows), probas


def _mixed_frame(token_ids: np.ndarray, delta: np.ndarray) -> pd.DataFrame:
    """Categorical token-id columns first (int), then Δ columns (float), for CatBoost."""
    return pd.concat([pd.DataFrame(token_ids).add_prefix("token_"), pd.DataFrame(delta).add_prefix("delta_")], axis=1)
