"""The labeling run of notebook 02: parameters -> labelers -> labels table + answer statistics.

Labeler specs (``labelers`` parameter, one mapping each)::

    {name: bm25, kind: reference}                      # also tfidf, embedding (method = name unless `method:` given)
    {name: deepseek-v3, kind: openai, env: DEEPSEEK,   # needs DEEPSEEK_API_KEY; base_url/model from the spec or
     base_url: https://api.deepseek.com, model: deepseek-chat, key_required: true}   # DEEPSEEK_BASE_URL/_MODEL
    {name: local-llm, kind: openai, env: DELTALENS_LLM}        # vLLM / Ollama / llama.cpp: DELTALENS_LLM_BASE_URL, _MODEL
    {name: local-hf, kind: transformers, model_env: DELTALENS_HF_MODEL}    # or model: /path/to/model
    {name: deepseek-v3-chat, kind: manual, model: "deepseek-v3 (chat)", answers: data/raw/manual_answers/x.txt}

A labeler that is not configured is skipped with the reason and how to enable it; one that fails fatally (wrong
key, unknown model) is reported as stopped, and whatever it answered before stays in the store and in the labels.
API keys are read from the environment only; no spec field can hold one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..context.schema import dataset_fingerprint
from ..core.params import ParameterError, check_choice, check_int, check_keys
from ..core.paths import resolve
from ..core.runinfo import atomic_write, write_json
from .base import LabelerUnavailable
from .manual import export_prompts, import_answers
from .run import RunReport, answer_stats, answers_to_labels, label_prompts, labels_frame
from .store import AnswerStore
from .templates import LabelPrompt, build_prompts, get_template

KINDS = ("reference", "openai", "transformers", "manual")
_SPEC_KEYS = {
    "reference": {"name", "kind", "method"},
    "openai": {"name", "kind", "env", "base_url", "model", "key_required", "max_concurrency", "timeout",
               "max_retries", "max_tokens", "temperature"},
    "transformers": {"name", "kind", "model", "model_env", "max_new_tokens", "device", "dtype", "max_prompt_tokens"},
    "manual": {"name", "kind", "model", "answers"},
}


def check_specs(specs) -> list[dict]:
    """Validate the ``labelers`` parameter; errors name the entry and field."""
    if not isinstance(specs, list) or not specs:
        raise ParameterError(f"parameter labelers={specs!r}: expected a non-empty list of labeler mappings")
    names = set()
    for i, s in enumerate(specs):
        where = f"labelers[{i}]"
        if not isinstance(s, dict) or "name" not in s or "kind" not in s:
            raise ParameterError(f"{where}={s!r}: each labeler needs at least 'name' and 'kind'")
        check_choice("kind", s["kind"], KINDS, where=where)
        check_keys(where, s, _SPEC_KEYS[s["kind"]], where=where)
        if s["name"] in names:
            raise ParameterError(f"{where}: labeler name {s['name']!r} is used twice")
        names.add(s["name"])
        if any("key" in k and k != "key_required" for k in s):
            raise ParameterError(f"{where}: API keys are read from the environment only")
        if s["kind"] == "reference":
            check_choice("method", s.get("method", s["name"]), ("bm25", "tfidf", "embedding"), where=where)
    return specs


def select_samples(ds, split: str | None, max_samples: int | None, seed: int) -> list[str]:
    """Sample ids for the generative labelers: ``split`` (None = all), in a seeded order, the first ``max_samples``."""
    s = ds.samples if split is None else ds.samples[ds.samples["split"] == split]
    if split is not None and s.empty:
        raise ParameterError(f"parameter label_split={split!r}: no samples in that split "
                             f"(splits: {sorted(ds.samples['split'].unique())})")
    ids = sorted(s["sample_id"])
    order = np.random.default_rng(seed).permutation(len(ids))
    ids = [ids[i] for i in order]
    return ids if max_samples is None else ids[:check_int("max_samples", max_samples, minimum=1)]


def make_generative(spec: dict):
    """The labeler object of a generative spec, or LabelerUnavailable saying how to enable it."""
    kind, name = spec["kind"], spec["name"]
    if kind == "openai":
        import os

        from .openai_api import OpenAICompatibleLabeler

        env = spec.get("env", "DELTALENS_LLM")
        if spec.get("key_required", False) and not os.environ.get(f"{env}_API_KEY"):
            raise LabelerUnavailable(f"labeler {name!r}: set {env}_API_KEY to enable it")
        kw = {k: spec[k] for k in ("max_concurrency", "timeout", "max_retries", "max_tokens", "temperature") if k in spec}
        return OpenAICompatibleLabeler.from_env(name, env, spec.get("base_url"), spec.get("model"), **kw)
    if kind == "transformers":
        from .hf_local import TransformersLabeler

        kw = {k: spec[k] for k in ("max_new_tokens", "device", "dtype", "max_prompt_tokens") if k in spec}
        return TransformersLabeler.from_spec(name, spec.get("model"), spec.get("model_env", "DELTALENS_HF_MODEL"), **kw)
    raise ParameterError(f"labeler {name!r}: kind {kind!r} is not generative")


@dataclass
class LabelingRun:
    labels: pd.DataFrame                         # LABEL_COLUMNS, every labeler that produced labels
    stats: pd.DataFrame                          # per (generative labeler, prompt): status, tokens, seconds
    scores: pd.DataFrame | None                  # reference similarity scores (all chunks)
    thresholds: dict[str, float]                 # reference labelers: threshold chosen on dev
    status: pd.DataFrame                         # one row per labeler: ran | skipped | stopped, with the reason
    reports: list[RunReport] = field(default_factory=list)
    store_problems: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    dataset_fingerprint: str | None = None       # what the labels and scores belong to (the analysis checks it)


def reference_scores(ds, methods: list[str], query_lines: int, cache: str | Path | None = None,
                     progress: bool = True) -> pd.DataFrame:
    """:func:`deltalens.core.similarity.score_dataset`, cached in ``cache`` (parquet + ``.json`` key) when given.

    The key holds the dataset's output hashes, the methods, ``query_lines`` and the scoring models, so a cached
    frame is reused only for exactly the same inputs (embedding all chunks takes minutes on a CPU)."""
    import json

    from ..core.similarity import METHOD_MODELS, score_dataset

    key = {"dataset": dataset_fingerprint(ds),
           "methods": list(methods), "query_lines": query_lines, "models": {m: METHOD_MODELS[m] for m in methods}}
    path = resolve(cache) if cache else None
    if path is not None and path.is_file() and path.with_suffix(".json").is_file():
        if json.loads(path.with_suffix(".json").read_text()) == key:
            scores = pd.read_parquet(path)
            scores.attrs["models"] = key["models"]
            return scores
    scores = score_dataset(ds, methods, query_lines=query_lines, progress=progress)
    if path is not None:
        atomic_write(path, lambda p: scores.to_parquet(p, index=False))
        write_json(path.with_suffix(".json"), key, indent=None)
    return scores


def _shown(path: Path) -> str:
    """A path relative to the repository root when it is inside it (for messages and saved tables)."""
    import os

    from ..core.paths import project_root

    root = project_root()
    return os.path.relpath(path, root) if Path(path).resolve().is_relative_to(root) else str(path)


def run_labeling(ds, specs: list[dict], *, template: str, sample_ids: list[str], store_path: str | Path,
                 manual_dir: str | Path, query_lines: int = 30, concurrency: int | None = None,
                 scores_cache: str | Path | None = None, progress: bool = True) -> LabelingRun:
    """Run every labeler of ``specs``: reference labelers on the whole dataset, generative ones on ``sample_ids``."""
    from .reference import reference_labels

    check_specs(specs)
    get_template(template)
    store = AnswerStore(resolve(store_path))
    prompts: list[LabelPrompt] | None = None
    tables, stats, reports, status, skipped = [], [], [], [], {}
    scores, thresholds = None, {}

    ref = [s for s in specs if s["kind"] == "reference"]
    if ref:
        methods = list(dict.fromkeys(s.get("method", s["name"]) for s in ref))
        scores = reference_scores(ds, methods, query_lines, scores_cache, progress)
        ref_labels, thresholds = reference_labels(scores, methods)
        for s in ref:
            lab = ref_labels[ref_labels["labeler"] == s.get("method", s["name"])].assign(labeler=s["name"])
            tables.append(lab)
            status.append({"labeler": s["name"], "kind": "reference", "state": "ran",
                           "detail": f"threshold {thresholds[s.get('method', s['name'])]:.4g} chosen on dev"})

    for s in specs:
        if s["kind"] == "reference":
            continue
        if prompts is None:
            prompts = build_prompts(ds, sample_ids, template)
        name = s["name"]
        if s["kind"] == "manual":
            out = export_prompts(prompts, resolve(manual_dir) / name)
            answers = resolve(s["answers"]) if s.get("answers") else None
            if answers is None or not answers.is_file():
                shown = _shown(out)
                reason = (f"labeler {name!r}: paste the prompts in {shown}/ into a chat window, put each answer under "
                          f"its '=== id ===' line of {shown}/answers_template.txt and save that as "
                          f"{s.get('answers', '<answers file>')}")
                skipped[name] = reason
                status.append({"labeler": name, "kind": "manual", "state": "skipped", "detail": reason})
                continue
            model = s.get("model", name)
            rep = import_answers(answers, prompts, store, name, model)
            status.append({"labeler": name, "kind": "manual", "state": "ran", "detail": rep.summary()})
        else:
            try:
                labeler = make_generative(s)
            except LabelerUnavailable as e:
                skipped[name] = str(e)
                status.append({"labeler": name, "kind": s["kind"], "state": "skipped", "detail": str(e)})
                continue
            model = labeler.model
            rep = label_prompts(labeler, prompts, store, concurrency=concurrency, progress=progress)
            reports.append(rep)
            status.append({"labeler": name, "kind": s["kind"], "state": "stopped" if rep.fatal else "ran",
                           "detail": rep.summary()})
        tables.append(answers_to_labels(prompts, store, name, model, s["kind"]))
        stats.append(answer_stats(prompts, store, name, model))

    labels = labels_frame(pd.concat(tables, ignore_index=True)) if tables else labels_frame([])
    stats_df = pd.concat(stats, ignore_index=True) if stats else pd.DataFrame(
        columns=["labeler", "sample_id", "status", "problems", "prompt_tokens", "completion_tokens", "seconds"])
    return LabelingRun(labels=labels, stats=stats_df, scores=scores, thresholds=thresholds,
                       status=pd.DataFrame(status, columns=["labeler", "kind", "state", "detail"]),
                       reports=reports, store_problems=list(store.problems), skipped=skipped,
                       dataset_fingerprint=dataset_fingerprint(ds))


@dataclass
class LabelingSummary:
    quality: pd.DataFrame        # per labeler, each on the samples it labeled
    quality_common: pd.DataFrame  # every labeler on the samples all generative labelers labeled (the fair comparison)
    per_category: pd.DataFrame
    kappa: pd.DataFrame
    cost: pd.DataFrame
    confusions: dict
    common_samples: list[str]


def summarize(run: LabelingRun, ds, eval_split: str | None) -> LabelingSummary:
    """Every quality table of notebook 02 on ``eval_split`` (None: all samples)."""
    from .quality import agreement, confusions, cost_table, ground_truth, label_quality, per_category

    truth = ground_truth(ds)
    if run.labels.empty:
        raise ValueError("no labeler produced labels: check the 'labelers' parameter and the skipped reasons above")
    gen = run.labels[run.labels["kind"] != "reference"]
    answered = gen[gen["status"] != "unanswered"]
    common = None
    if not gen.empty:
        per = [set(g["sample_id"]) for _, g in answered.groupby("labeler")]
        common = sorted(set.intersection(*per)) if per else []
    q = label_quality(run.labels, truth, eval_split)
    qc = label_quality(run.labels, truth, eval_split, samples=common) if common else q.iloc[0:0]
    return LabelingSummary(
        quality=q, quality_common=qc, per_category=per_category(run.labels, truth, eval_split),
        kappa=agreement(run.labels, truth, eval_split, samples=common if common else None),
        cost=cost_table(run.stats), confusions=confusions(run.labels, truth, eval_split),
        common_samples=common or [])


def save_run(run: LabelingRun, summary: LabelingSummary, params: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write labels / stats / scores (parquet), metrics.json and params.json into ``out_dir``, each file atomically
    (:mod:`deltalens.core.runinfo`; NaN is written as ``null``)."""
    out = resolve(out_dir)
    paths = {"labels": out / "labels.parquet", "answers": out / "answer_stats.parquet",
             "metrics": out / "metrics.json", "params": out / "params.json"}
    tables = {"labels": run.labels, "answers": run.stats}
    if run.scores is not None:
        paths["scores"] = out / "reference_scores.parquet"
        tables["scores"] = pd.DataFrame(run.scores)
    for name, df in tables.items():
        atomic_write(paths[name], lambda p, df=df: df.to_parquet(p, index=False))
    metrics = {
        "quality": summary.quality.to_dict("records"),
        "quality_common_samples": summary.quality_common.to_dict("records"),
        "n_common_samples": len(summary.common_samples), "per_category": summary.per_category.to_dict("records"),
        "kappa": summary.kappa.astype(float).to_dict("index"),
        "cost": summary.cost.to_dict("records"), "thresholds": run.thresholds,
        "confusions": summary.confusions,
        "status": run.status.to_dict("records"), "store_problems": run.store_problems,
        "dataset_fingerprint": run.dataset_fingerprint,
    }
    write_json(paths["metrics"], metrics)
    write_json(paths["params"], params)
    return paths
