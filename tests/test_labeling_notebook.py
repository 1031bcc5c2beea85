"""notebooks/02_label_context.ipynb through papermill on a tiny dataset, with an OpenAI-compatible labeler served
by a fake chat server on 127.0.0.1 and a manual answers file; recorded metrics are checked against a direct
computation, and a second run asks nothing again."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml
from fake_chat_server import MODEL, FakeChatServer

from deltalens.context import build, load, load_params
from deltalens.core.paths import project_root
from deltalens.labeling.manual import prompt_id
from deltalens.labeling.pipeline import select_samples
from deltalens.labeling.templates import build_prompts


def first_chunk_responder():
    """Answers: chunk 1 relevant, every other chunk not; the 2nd prompt asked gets a malformed answer."""
    calls = []

    def respond(payload: dict) -> str:
        calls.append(payload)
        if len(calls) == 2:
            return "Sorry, I cannot decide."
        n = int(re.search(r"numbered 1 to (\d+)", payload["messages"][-1]["content"]).group(1))
        return json.dumps({"chunks": [{"id": i, "relevant": i == 1, "confidence": 0.8} for i in range(1, n + 1)]})
    return respond


@pytest.mark.notebook
def test_labeling_notebook_end_to_end(tmp_path, monkeypatch):
    import papermill as pm

    root = project_root()
    smoke = yaml.safe_load((root / "params/labeling/smoke.yaml").read_text())
    p = load_params(root / "params/dataset/smoke.yaml", {"out": str(tmp_path / "ctx"), "samples_per_project": 4})
    build(p, progress=False)
    ds = load(tmp_path / "ctx")

    params = {**smoke, "dataset_dir": str(tmp_path / "ctx"), "max_samples": 3, "concurrency": 1,
              "scores_cache": str(tmp_path / "out/scores.parquet"), "store_path": str(tmp_path / "out/answers.jsonl"),
              "manual_dir": str(tmp_path / "manual"), "out_dir": str(tmp_path / "out"),
              "figures_dir": str(tmp_path / "fig")}
    params["labelers"] = [*smoke["labelers"][:3],
                          {"name": "manual-chat", "kind": "manual", "answers": str(tmp_path / "answers.txt")}]
    ids = select_samples(ds, params["label_split"], params["max_samples"], params["seed"])
    prompts = build_prompts(ds, ids, params["template"])
    # manual answers: chunk 2 relevant in every prompt except the last, which is left unanswered
    (tmp_path / "answers.txt").write_text("".join(
        f"=== {prompt_id(n, pr)} ===\n" + json.dumps({"chunks": [{"id": i, "relevant": i == 2} for i in pr.chunk_ids]}) + "\n"
        for n, pr in enumerate(prompts[:-1], start=1)))

    with FakeChatServer() as server:
        server.responder = first_chunk_responder()
        monkeypatch.setenv("DELTALENS_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("DELTALENS_LLM_MODEL", MODEL)
        monkeypatch.delenv("DELTALENS_LLM_API_KEY", raising=False)
        for run in range(2):
            pm.execute_notebook(str(root / "notebooks/02_label_context.ipynb"), str(tmp_path / f"run{run}.ipynb"),
                                kernel_name="deltalens", parameters=params, cwd=str(root), progress_bar=False)
            if run == 0:
                asked = len(server.chat_requests())
        assert asked == len(prompts) and len(server.chat_requests()) == asked, "the second run asked again"

    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    labels = pd.read_parquet(tmp_path / "out/labels.parquet")
    truth = ds.chunks.merge(ds.samples[["sample_id", "split"]], on="sample_id")
    truth = truth[truth["split"] == "test"]
    quality = {q["labeler"]: q for q in metrics["quality"]}
    assert set(quality) == {"bm25", "tfidf", "openai-compatible", "manual-chat"}

    def direct(sample_ids, predict):
        t = truth[truth["sample_id"].isin(sample_ids)]
        y, p = (t["category"] == "relevant").to_numpy(), predict(t)
        tp = (y & p).sum()
        inj = t["category"] == "injected"
        return tp / p.sum(), tp / y.sum(), 1 - p[inj.to_numpy()].mean()

    # the API labeler: chunk 1 relevant, except the malformed 2nd prompt (no labels at all)
    answered = [ids[0], ids[2]]
    prec, rec, inj = direct(answered, lambda t: (t["chunk_index"] == 0).to_numpy())
    q = quality["openai-compatible"]
    assert q["samples"] == 3 and q["coverage"] == pytest.approx(
        truth[truth["sample_id"].isin(answered)].shape[0] / truth[truth["sample_id"].isin(ids)].shape[0])
    assert (q["precision"], q["recall"], q["injected_rejected"]) == pytest.approx((prec, rec, inj))
    cost = {c["labeler"]: c for c in metrics["cost"]}["openai-compatible"]
    assert cost["answered"] == 3 and cost["share_malformed"] == pytest.approx(1 / 3)
    assert cost["mean_prompt_tokens"] == 11  # what the fake server reports

    # the manual labeler: chunk 2 relevant, last prompt unanswered
    prec, rec, _ = direct(ids[:2], lambda t: (t["chunk_index"] == 1).to_numpy())
    q = quality["manual-chat"]
    assert (q["precision"], q["recall"]) == pytest.approx((prec, rec))
    assert (labels.query("labeler == 'manual-chat'").groupby("sample_id")["status"].first().to_dict()
            == {ids[0]: "ok", ids[1]: "ok", ids[2]: "unanswered"})

    # reference labelers: thresholds from dev, labels = score >= threshold, on every chunk of the dataset
    scores = pd.read_parquet(tmp_path / "out/reference_scores.parquet")
    for m in ("bm25", "tfidf"):
        lab = labels[labels["labeler"] == m]
        assert len(lab) == len(ds.chunks)
        np.testing.assert_array_equal(lab["label"].to_numpy(bool), scores[m].to_numpy() >= metrics["thresholds"][m])
    kappa = metrics["kappa"]
    assert kappa["ground truth"]["ground truth"] == 1.0 and set(kappa) >= {"bm25", "openai-compatible"}
    for f in ("per_category.png", "confusions.png", "kappa.png"):
        assert (tmp_path / "fig" / f).stat().st_size > 0
    saved = json.loads((tmp_path / "out/params.json").read_text())
    assert saved["max_samples"] == 3 and "API_KEY" not in json.dumps(saved)
