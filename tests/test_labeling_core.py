"""The core of the labeling package: prompt building, answer parsing, the answer store, the runner and the manual
workflow. Only fake in-test labelers: no network, no model, fast."""

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import numpy as np
import pytest

from deltalens.context.jsonl import from_records
from deltalens.context.schema import ContextDataset
from deltalens.core.params import ParameterError
from deltalens.labeling.base import (
    LABEL_COLUMNS,
    Completion,
    GenerativeLabeler,
    LabelerFatalError,
    LabelPrompt,
    TransientLabelerError,
)
from deltalens.labeling.manual import ManualAnswersError, export_prompts, import_answers, prompt_id, read_answers
from deltalens.labeling.parse import parse_answer
from deltalens.labeling.run import answer_stats, answers_to_labels, label_prompts
from deltalens.labeling.store import RECORD_FIELDS, AnswerStore, answer_key
from deltalens.labeling.templates import CURSOR, TEMPLATES, Template, build_prompt, build_prompts, get_template

# ---- a tiny dataset -------------------------------------------------------------------------------------------------
CONFIG = "def load_config(path):\n    with open(path) as fh:\n        return parse_config_text(fh.read())\n"
CIRCLE = "def draw_circle(canvas, radius):\n    canvas.arc(0, 0, radius, 0, 360)\n"
MATRIX = "class Matrix:\n    def __init__(self, rows):\n        self.rows = rows\n"
PREFIX = "import os\n\ndef main():\n    settings = load_config(os.environ['CONFIG_PATH'])\n"
TARGET = "    timeout = settings.get('request_timeout_seconds', 30)"
SUFFIX = "    return suffix_never_shown(timeout)\n"
LONG_CHUNK = "".join(f"VALUE_{i:03d} = {i}\n" for i in range(300))           # 4,000+ characters
LONG_PREFIX = "".join(f"line_{i:03d} = {i}  # filler\n" for i in range(300))   # 7,000+ characters


def _obj(sid, prefix, chunks):
    """chunks: (category, path, text, defines)"""
    return {"sample_id": sid, "project": "alpha", "path": "app/main.py", "prefix": prefix, "target": TARGET,
            "suffix": SUFFIX, "split": "dev",
            "chunks": [{"text": t, "category": c, "path": p, "defines": d} for c, p, t, d in chunks]}


OBJS = [
    _obj("s1", PREFIX, [("distractor", "geo/circle.py", CIRCLE, []), ("relevant", "app/config.py", CONFIG, ["load_config"]),
                        ("related", "la/matrix.py", MATRIX, [])]),
    _obj("s2", "m = Matrix(rows)\n", [("relevant", "la/matrix.py", MATRIX, ["Matrix"]),
                                      ("distractor", "app/config.py", CONFIG, [])]),
    _obj("s3", LONG_PREFIX, [("relevant", "consts.py", LONG_CHUNK, ["VALUE_001"]), ("distractor", "geo/circle.py", CIRCLE, [])]),
]


def make_ds(objs=OBJS) -> ContextDataset:
    return from_records(objs)


@pytest.fixture(scope="module")
def ds():
    return make_ds()


def user_text(p: LabelPrompt) -> str:
    assert [m["role"] for m in p.messages] == ["system", "user"]
    return p.messages[1]["content"]


# ---- 1. prompt building ---------------------------------------------------------------------------------------------
def test_prompt_shows_numbered_chunks_paths_prefix_and_cursor_but_not_the_target(ds):
    s = ds.sample("s1")
    p = build_prompt(s)
    u = user_text(p)
    assert p.sample_id == "s1" and p.template == "json@1" and p.chunk_ids == (1, 2, 3)
    positions = []
    for c in s["chunks"]:
        head = f"### Chunk {c['chunk_index'] + 1} ({c['path']})\n```python\n{c['text'].rstrip()}\n```"
        assert u.count(head) == 1, head
        positions.append(u.index(head))
    assert positions == sorted(positions)  # in prompt order
    assert "numbered 1 to 3" in u
    assert "### File being edited: app/main.py" in u
    assert u.count(CURSOR) >= 2  # named in the task and placed once at the end of the query
    assert PREFIX + CURSOR + "\n```" in u
    assert u.index(PREFIX + CURSOR) > positions[-1]
    # what the completion must produce (and what follows it) is never shown
    assert TARGET not in u and "request_timeout_seconds" not in u and "suffix_never_shown" not in p.text
    assert p.text.startswith("[system]\n") and "\n\n[user]\n" in p.text and u in p.text


def test_chunk_ids_follow_chunk_index_not_list_order(ds):
    s = ds.sample("s1")
    shuffled = dict(s, chunks=list(reversed(s["chunks"])))
    a, b = build_prompt(s), build_prompt(shuffled)
    assert b.chunk_ids == (1, 2, 3) and b.messages == a.messages and b.prompt_hash == a.prompt_hash
    two = build_prompt(ds.sample("s2"))
    assert two.chunk_ids == (1, 2) and "numbered 1 to 2" in user_text(two)
    assert "### Chunk 1 (la/matrix.py)" in user_text(two) and "### Chunk 3" not in user_text(two)


def test_prompt_hash_is_deterministic_and_changes_with_template_and_text(ds):
    p = build_prompt(ds.sample("s1"))
    assert len(p.prompt_hash) == 64 and int(p.prompt_hash, 16) >= 0
    assert build_prompt(ds.sample("s1")).prompt_hash == p.prompt_hash
    assert build_prompt(make_ds().sample("s1")).prompt_hash == p.prompt_hash  # a rebuilt dataset: same hash
    assert build_prompt(ds.sample("s1"), "list@1").prompt_hash != p.prompt_hash
    other_prefix = dict(ds.sample("s1"), prefix=PREFIX + "    retries = 3\n")
    assert build_prompt(other_prefix).prompt_hash != p.prompt_hash
    s = ds.sample("s1")
    s["chunks"][0]["text"] = CIRCLE.replace("360", "180")
    assert build_prompt(s).prompt_hash != p.prompt_hash
    hashes = {q.prompt_hash for q in build_prompts(ds)}
    assert len(hashes) == 3


def test_json_and_list_templates_differ_only_in_the_answer_instructions(ds):
    j, l = build_prompt(ds.sample("s1"), "json@1"), build_prompt(ds.sample("s1"), "list@1")
    uj, ul = user_text(j), user_text(l)
    assert l.template == "list@1" and l.chunk_ids == j.chunk_ids
    assert "Answer with JSON only" in uj and '{"chunks": [{"id": 1, "relevant": true, "confidence": 0.9}' in uj
    assert "Decide for EVERY chunk, 1 to 3" in uj
    assert "RELEVANT: 2, 5" in ul and "RELEVANT: none" in ul
    assert "JSON" not in ul and "RELEVANT: none" not in uj
    shared = uj[: uj.index("Decide for EVERY chunk")]
    assert ul.startswith(shared) and CURSOR in shared
    assert j.messages[0] == l.messages[0]


def test_get_template_by_id_by_name_latest_version_and_unknown(ds, monkeypatch):
    assert get_template("json@1") is TEMPLATES["json@1"]
    assert get_template("list").id == "list@1" and get_template("list").answer_format == "list"
    t = Template("custom", 1, "json")
    assert get_template(t) is t
    monkeypatch.setitem(TEMPLATES, "json@3", Template("json", 3, "json", max_chunk_chars=100))
    monkeypatch.setitem(TEMPLATES, "json@2", Template("json", 2, "json"))
    assert get_template("json").id == "json@3"
    assert get_template("json@1").version == 1
    assert build_prompt(ds.sample("s1"), "json").template == "json@3"
    for bad in ("nope", "json@9", "JSON"):
        with pytest.raises(ParameterError, match="not a known template"):
            get_template(bad)
    with pytest.raises(ParameterError, match="'nope'"):
        build_prompt(ds.sample("s1"), "nope")
    with pytest.raises(ParameterError, match="nope"):
        build_prompts(ds, ["s1"], template="nope")


def test_build_prompts_order_unknown_ids_and_missing_fields(ds):
    assert [p.sample_id for p in build_prompts(ds)] == ["s1", "s2", "s3"]
    ps = build_prompts(ds, ["s3", "s1"], template="list")
    assert [p.sample_id for p in ps] == ["s3", "s1"] and {p.template for p in ps} == {"list@1"}
    assert ps[1] == build_prompt(ds.sample("s1"), "list@1")
    with pytest.raises(ParameterError, match="not in the dataset.*'nope'"):
        build_prompts(ds, ["s1", "nope"])
    s = ds.sample("s1")
    del s["prefix"]
    with pytest.raises(ParameterError, match="'s1'.*'prefix'"):
        build_prompt(s)


def test_long_chunks_are_cut_and_only_the_prefix_tail_is_shown(ds):
    u = user_text(build_prompt(ds.sample("s3")))
    assert "VALUE_000 = 0\n" in u and "VALUE_299" not in u
    head = "### Chunk 1 (consts.py)\n```python\n"
    body = u[u.index(head) + len(head): u.index("\n```", u.index(head) + len(head))]
    assert body.endswith("\n# ... (cut)") and len(body) <= 2000 + len("\n# ... (cut)")
    assert LONG_CHUNK.startswith(body[: -len("\n# ... (cut)")] + "\n")  # cut at a line end
    assert CIRCLE.rstrip() in u and u.count("(cut)") == 1                # the short chunk is whole
    # the query: the last lines of the prefix, whole lines only, at most 2000 characters, ending at the cursor
    qhead = "### File being edited: app/main.py\n```python\n"
    query = u[u.index(qhead) + len(qhead): u.index(CURSOR + "\n```")]
    assert LONG_PREFIX.endswith(query) and len(query) <= 2000 and LONG_PREFIX[-len(query) - 1] == "\n"
    assert query.startswith("line_") and "line_299 = 299  # filler\n" in query and "line_000" not in u
    small = Template("small", 1, "json", max_chunk_chars=60, max_query_chars=40)
    us = user_text(build_prompt(ds.sample("s1"), small))
    assert "def draw_circle(canvas, radius):\n# ... (cut)" in us
    assert "    settings = load_config(os.environ['CONFIG_PATH'])\n" + CURSOR not in us  # 53 chars > 40: dropped


# ---- 2. the parser --------------------------------------------------------------------------------------------------
IDS = (1, 2, 3, 4)
T, F = True, False


def check(a, status, labels, **kw):
    assert a.status == status, (a.status, a)
    assert a.labels == labels, a
    for k, v in kw.items():
        assert getattr(a, k) == v, (k, getattr(a, k), a)
    return a


def chunks_json(*entries) -> str:
    return json.dumps({"chunks": [dict(zip(("id", "relevant", "confidence"), e)) for e in entries]})


def test_valid_json_with_confidences_and_percentages():
    text = chunks_json((1, True, 0.9), (2, False, 85), (3, False), (4, True, 1))
    a = check(parse_answer(text, IDS), "ok", {1: T, 2: F, 3: F, 4: T}, confidence={1: 0.9, 2: 0.85, 4: 1.0},
              missing=[], extra=[], invalid=0, conflicts=[], reader="json")
    assert a.problems == []
    # a confidence that is neither a probability nor a percentage is not kept, the label is
    check(parse_answer(chunks_json((1, True, 150), (2, False, -0.2), (3, False, "high"), (4, True, "0.6")), IDS),
          "ok", {1: T, 2: F, 3: F, 4: T}, confidence={4: 0.6})


def test_json_in_a_fence_with_prose_around():
    text = ("Sure! Chunk 2 defines load_config, which the line uses.\n\n```json\n"
            + chunks_json((1, False, 0.8), (2, True, 0.95), (3, False, 0.7), (4, False, 0.6))
            + "\n```\nLet me know if you need anything else.")
    check(parse_answer(text, IDS), "ok", {1: F, 2: T, 3: F, 4: F}, confidence={1: 0.8, 2: 0.95, 3: 0.7, 4: 0.6},
          reader="json")


@pytest.mark.parametrize("text", ["I think the second chunk matters most.", '{"answer": "chunk two"}', "{oops",
                                  "RELEVANT: 2"])  # a list line under the json template is not JSON
def test_malformed_answer_has_no_labels(text):
    a = check(parse_answer(text, IDS), "malformed", {}, missing=list(IDS))
    assert "no label could be read" in a.problems


@pytest.mark.parametrize("text", ["", "   \n\t ", None])
def test_empty_answer(text):
    for fmt in ("json", "list"):
        a = check(parse_answer(text, IDS, fmt), "empty", {}, missing=list(IDS), extra=[], invalid=0)
        assert a.problems == ["empty answer"]


def test_partial_answer_lists_the_missing_ids():
    a = check(parse_answer(chunks_json((1, True), (3, False)), IDS), "partial", {1: T, 3: F}, missing=[2, 4])
    assert a.problems == ["no label for chunk(s) [2, 4]"]


def test_ids_not_in_the_prompt_are_extra_not_labels():
    a = check(parse_answer(chunks_json((1, True), (2, False), (7, True), (3, False), (4, False), (0, True)), IDS),
              "partial", {1: T, 2: F, 3: F, 4: F}, extra=[7, 0], missing=[])
    assert "id(s) not in the prompt: [7, 0]" in a.problems


def test_duplicate_ids_with_conflicting_labels_keep_the_first():
    text = chunks_json((1, True, 0.9), (2, False), (1, False, 0.2), (3, False), (3, False), (4, True))
    a = check(parse_answer(text, IDS), "partial", {1: T, 2: F, 3: F, 4: T}, conflicts=[1], confidence={1: 0.9})
    assert "conflicting labels for chunk(s) [1] (first kept)" in a.problems


def test_truncated_json_keeps_the_complete_entries():
    full = chunks_json((1, True, 0.9), (2, False, 85), (3, False, 0.7), (4, True, 0.6))
    cut = full[: full.index('"id": 3') + len('"id": 3, "rel')]  # cut mid-object (max_tokens reached)
    check(parse_answer(cut, IDS), "partial", {1: T, 2: F}, confidence={1: 0.9, 2: 0.85}, missing=[3, 4],
          reader="lines")
    cut_after_object = full[: full.index('{"id": 3')]
    check(parse_answer(cut_after_object, IDS), "partial", {1: T, 2: F}, missing=[3, 4])


@pytest.mark.parametrize("text, labels, confidence", [
    ('{"1": true, "2": false, "3": "no", "4": "yes"}', {1: T, 2: F, 3: F, 4: T}, {}),
    ('{"1": {"relevant": false, "confidence": 0.6}, "2": {"relevant": true}, "3": {"label": "irrelevant"}, '
     '"4": {"relevant": false}}', {1: F, 2: T, 3: F, 4: F}, {1: 0.6}),
    ('{"relevant": [2, 4], "irrelevant": [1, 3]}', {1: F, 2: T, 3: F, 4: T}, {}),
    ('{"relevant": ["2"], "not_relevant": [1, 3, 4]}', {1: F, 2: T, 3: F, 4: F}, {}),
    ('[{"id": 1, "relevant": true, "confidence": 70}, {"chunk": 2, "label": false}, {"id": "3", "relevant": "no"}, '
     '{"id": "chunk 4", "relevant": 1}]', {1: T, 2: F, 3: F, 4: T}, {1: 0.7}),
    ('{"labels": {"1": false, "2": true, "3": false, "4": false}}', {1: F, 2: T, 3: F, 4: F}, {}),
])
def test_alternative_json_shapes(text, labels, confidence):
    check(parse_answer(text, IDS), "ok", labels, confidence=confidence, reader="json", missing=[])


def test_relevant_only_shapes_are_partial_in_json_but_complete_in_list_format():
    check(parse_answer('{"relevant": [2]}', IDS), "partial", {2: T}, missing=[1, 3, 4])
    check(parse_answer("[2, 4]", IDS, "json"), "partial", {2: T, 4: T}, missing=[1, 3])
    check(parse_answer("[2, 4]", IDS, "list"), "ok", {1: F, 2: T, 3: F, 4: T}, reader="json")


def test_line_format_is_read_but_marked_partial():
    text = "Chunk 1: relevant\nChunk 2: not relevant\nchunk #3 - irrelevant\nChunk 4: **yes**"
    a = check(parse_answer(text, IDS), "partial", {1: T, 2: F, 3: F, 4: T}, missing=[], reader="lines")
    assert a.problems == ["not in the requested format (read line by line)"]
    check(parse_answer("Chunk 3: not relevant", IDS), "partial", {3: F}, missing=[1, 2, 4], reader="lines")


def test_list_format():
    check(parse_answer("RELEVANT: 2, 4", IDS, "list"), "ok", {1: F, 2: T, 3: F, 4: T}, reader="list")
    check(parse_answer("After reading every chunk:\nRELEVANT: none.", IDS, "list"), "ok", {1: F, 2: F, 3: F, 4: F})
    check(parse_answer("RELEVANT: []", IDS, "list"), "ok", {1: F, 2: F, 3: F, 4: F})
    a = check(parse_answer("relevant: 2, 9", IDS, "list"), "partial", {1: F, 2: T, 3: F, 4: F}, extra=[9],
              missing=[])
    assert a.problems == ["id(s) not in the prompt: [9]"]
    # a list answer to the json template: no JSON, no "Chunk n: relevant" line -> nothing read
    check(parse_answer("RELEVANT: 2, 4", IDS, "json"), "malformed", {})


def test_invalid_values_are_counted():
    text = json.dumps({"chunks": [{"id": 1, "relevant": "maybe"}, {"id": 2, "relevant": True},
                                  {"id": "two", "relevant": False}, {"id": 3, "relevant": False},
                                  {"id": 4, "relevant": None}, {"relevant": True}]})
    a = check(parse_answer(text, IDS), "partial", {2: T, 3: F}, invalid=4, missing=[1, 4])
    assert "4 entries could not be read" in a.problems
    b = check(parse_answer(chunks_json((1, "maybe"), (2, T), (3, F), (4, F)), IDS), "partial", {2: T, 3: F, 4: F},
              invalid=1, missing=[1])
    assert "1 entry could not be read" in b.problems


def test_list_format_negated_lists_are_not_read_as_relevant():
    a = parse_answer("NOT RELEVANT: 1, 3\nRELEVANT: 2, 4", IDS, "list")
    assert a.labels == {1: F, 2: T, 3: F, 4: T}
    b = parse_answer("IRRELEVANT: 1, 3, 4", IDS, "list")
    assert b.labels.get(1) is not True and b.labels.get(3) is not True and b.labels.get(4) is not True


def test_code_in_prose_before_the_json_block_does_not_hide_the_answer():
    text = ("The line reads settings[0], so only chunk 2 is needed.\n```json\n"
            + chunks_json((1, False), (2, True), (3, False), (4, False)) + "\n```")
    check(parse_answer(text, IDS), "ok", {1: F, 2: T, 3: F, 4: F})


# ---- 3. the answer store --------------------------------------------------------------------------------------------
def fake_prompt(i, template="json@1", chunk_ids=(1, 2, 3)):
    """A LabelPrompt without a dataset (also sent to the subprocess of the interruption test)."""
    import hashlib as _h

    from deltalens.labeling.base import LabelPrompt as _LP
    content = f"prompt number {i}"
    digest = _h.sha256(f"{template}\x1f{content}".encode()).hexdigest()
    return _LP(sample_id=f"p{i}", template=template, messages=({"role": "user", "content": content},),
               chunk_ids=tuple(chunk_ids), prompt_hash=digest)


def put(store, i, text=None, labeler="lab", model="m1", **kw):
    return store.put(labeler=labeler, kind="openai", model=model, prompt=fake_prompt(i),
                     completion=Completion(text=f"answer {i}" if text is None else text, **kw))


def lines_of(path):
    return path.read_bytes().split(b"\n")


def test_store_put_get_contains_len_and_reopen(tmp_path):
    path = tmp_path / "sub" / "answers.jsonl"
    store = AnswerStore(path)
    assert len(store) == 0 and store.problems == [] and not path.exists()
    rec = put(store, 0, prompt_tokens=120, completion_tokens=7, seconds=0.123456, finish_reason="stop")
    put(store, 1)
    put(store, 1, labeler="other")
    put(store, 1, model="m2")
    assert len(store) == 4
    key = store.key_of("lab", "m1", fake_prompt(0))
    assert key == answer_key("lab", "m1", "json@1", fake_prompt(0).prompt_hash) == rec["key"]
    assert key in store and "nope" not in store and store.get("nope") is None
    assert store.key_of("lab", "m2", fake_prompt(0)) not in store
    assert tuple(rec) == RECORD_FIELDS
    assert rec["text"] == "answer 0" and rec["sample_id"] == "p0" and rec["kind"] == "openai"
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["seconds"], rec["finish_reason"]) == (120, 7, 0.1235, "stop")
    assert rec["created"].endswith("+00:00") and rec["template"] == "json@1"
    assert len(store.records("lab")) == 3 and [r["labeler"] for r in store.records("other")] == ["other"]
    again = AnswerStore(path)
    assert len(again) == 4 and again.problems == []
    assert again.get(key) == rec and again.records() == store.records()
    assert lines_of(path)[-1] == b"" and len(lines_of(path)) == 5


def test_store_put_of_a_stored_key_keeps_the_first(tmp_path):
    path = tmp_path / "a.jsonl"
    store = AnswerStore(path)
    first = put(store, 0, "first")
    assert put(store, 0, "second") == first
    assert len(store) == 1 and path.read_text().count("\n") == 1
    reopened = AnswerStore(path)
    assert put(reopened, 0, "third")["text"] == "first"
    assert path.read_text().count("\n") == 1 and AnswerStore(path).records()[0]["text"] == "first"


def test_store_torn_last_line_is_skipped_reported_and_the_next_put_starts_a_new_line(tmp_path):
    path = tmp_path / "a.jsonl"
    store = AnswerStore(path)
    put(store, 0)
    put(store, 1)
    with open(path, "ab") as f:  # a kill in the middle of writing record 2
        f.write(b'{"key": "' + store.key_of("lab", "m1", fake_prompt(2)).encode() + b'", "labeler": "lab", "mo')
    torn = AnswerStore(path)
    assert len(torn) == 2 and store.key_of("lab", "m1", fake_prompt(2)) not in torn
    assert len(torn.problems) == 1 and torn.problems[0].startswith(f"{path}:3: torn last line")
    put(torn, 2, "answer 2 again")
    put(torn, 3)
    lines = lines_of(path)
    assert len(lines) == 6 and lines[2].endswith(b'"mo') and lines[-1] == b""
    assert json.loads(lines[3])["sample_id"] == "p2" and json.loads(lines[4])["sample_id"] == "p3"
    final = AnswerStore(path)
    assert sorted(r["sample_id"] for r in final.records()) == ["p0", "p1", "p2", "p3"]
    assert final.get(final.key_of("lab", "m1", fake_prompt(2)))["text"] == "answer 2 again"
    assert len(final.problems) == 1 and final.problems[0].startswith(f"{path}:3: unreadable line skipped")


def test_store_unreadable_lines_in_the_middle_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "a.jsonl"
    recs = [put(AnswerStore(tmp_path / "src.jsonl"), i) for i in range(3)]
    body = [json.dumps(recs[0]), "this is not json", json.dumps(recs[1]), "[1, 2]",
            json.dumps({"key": "k", "labeler": "lab"}), "", json.dumps(recs[2])]
    path.write_text("\n".join(body) + "\n")
    store = AnswerStore(path)
    assert len(store) == 3 and [r["sample_id"] for r in store.records()] == ["p0", "p1", "p2"]
    assert len(store.problems) == 3
    for problem, n in zip(store.problems, (2, 4, 5)):
        assert problem.startswith(f"{path}:{n}: unreadable line skipped")
    assert "not an answer record" in store.problems[1]


def test_store_duplicate_keys_in_the_file_keep_the_first_and_are_reported(tmp_path):
    path = tmp_path / "a.jsonl"
    a = put(AnswerStore(tmp_path / "x.jsonl"), 0, "first")
    b = put(AnswerStore(tmp_path / "y.jsonl"), 0, "second")
    c = put(AnswerStore(tmp_path / "z.jsonl"), 1)
    assert a["key"] == b["key"]
    path.write_text("".join(json.dumps(r) + "\n" for r in (a, c, b)))
    store = AnswerStore(path)
    assert len(store) == 2 and store.get(a["key"])["text"] == "first"
    assert len(store.problems) == 1 and store.problems[0].startswith(f"{path}:3: duplicate answer for key {a['key'][:12]}")


def test_store_is_thread_safe(tmp_path):
    path = tmp_path / "a.jsonl"
    store = AnswerStore(path)
    start = threading.Barrier(8)

    def work(t):
        start.wait()
        for k in range(25):
            put(store, t * 100 + k, f"thread {t} answer {k} " + "x" * 500)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(store) == 200
    lines = path.read_text().splitlines()
    assert len(lines) == 200
    recs = [json.loads(line) for line in lines]
    assert len({r["key"] for r in recs}) == 200
    reopened = AnswerStore(path)
    assert len(reopened) == 200 and reopened.problems == []
    # 8 threads racing to store the same 25 answers: each is written once
    start = threading.Barrier(8)
    threads = [threading.Thread(target=lambda t=t: (start.wait(), [put(store, 1000 + k, f"race {t}") for k in range(25)]))
               for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(store) == 225 and len(path.read_text().splitlines()) == 225
    reopened = AnswerStore(path)
    assert len(reopened) == 225 and reopened.problems == []


CHILD = """
import sys, time
from deltalens.labeling.base import Completion
from deltalens.labeling.run import label_prompts
from deltalens.labeling.store import AnswerStore

{fake_prompt}

class Slow:
    kind, name, model, max_concurrency = "openai", "slow", "fake-model", 2

    def complete(self, prompt):
        time.sleep(0.08)
        return Completion(text="RELEVANT: 1 for " + prompt.sample_id, prompt_tokens=10, completion_tokens=3)

label_prompts(Slow(), [fake_prompt(i) for i in range(int(sys.argv[2]))], AnswerStore(sys.argv[1]), progress=False)
print("FINISHED", flush=True)
"""


class FakeLabeler:
    """A GenerativeLabeler: answers chunk 1 relevant; ``fail`` maps sample ids to exceptions to raise."""

    kind = "openai"

    def __init__(self, name="fake", model="fake-model", max_concurrency=1, fail=None, answer=None, delay=0.0):
        self.name, self.model, self.max_concurrency = name, model, max_concurrency
        self.fail, self.answer, self.delay = dict(fail or {}), answer, delay
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def complete(self, prompt: LabelPrompt) -> Completion:
        with self._lock:
            self.asked.append(prompt.sample_id)
        if self.delay:
            time.sleep(self.delay)
        if prompt.sample_id in self.fail:
            raise self.fail[prompt.sample_id]
        text = self.answer(prompt) if self.answer else chunks_json(*[(c, c == 1, 0.8) for c in prompt.chunk_ids])
        return Completion(text=text, prompt_tokens=100 + len(self.asked), completion_tokens=20, seconds=0.01,
                          finish_reason="stop")


def test_killed_run_resumes_without_asking_anything_twice_or_losing_anything(tmp_path):
    n = 60
    path = tmp_path / "answers.jsonl"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(fake_prompt=textwrap.dedent(inspect.getsource(fake_prompt))))
    proc = subprocess.Popen([sys.executable, str(script), str(path), str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and path.read_bytes().count(b"\n") >= 4:
                break
            time.sleep(0.005)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and b"FINISHED" not in out, err.decode()[-2000:]

    prompts = [fake_prompt(i) for i in range(n)]
    store = AnswerStore(path)
    stored = {r["sample_id"] for r in store.records()}
    assert 4 <= len(stored) < n and all(r["labeler"] == "slow" for r in store.records())
    labeler = FakeLabeler(name="slow", model="fake-model", max_concurrency=3)
    report = label_prompts(labeler, prompts, store, progress=False)
    assert Counter(labeler.asked).most_common(1)[0][1] == 1                    # nothing asked twice
    assert set(labeler.asked) == {p.sample_id for p in prompts} - stored        # exactly what was missing
    assert (report.cached, report.answered, report.failed, report.fatal) == (len(stored), n - len(stored), [], None)
    records, unreadable = [], 0
    for line in path.read_bytes().split(b"\n"):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                unreadable += 1  # at most the line a kill tore (never a finished answer)
    assert unreadable <= 1
    assert Counter(r["sample_id"] for r in records) == Counter({p.sample_id: 1 for p in prompts})
    final = AnswerStore(path)
    assert len(final) == n and len(final.problems) == unreadable
    assert label_prompts(FakeLabeler(name="slow", model="fake-model"), prompts, final, progress=False).cached == n


# ---- 4. the runner --------------------------------------------------------------------------------------------------
def test_fake_labeler_is_a_generative_labeler():
    assert isinstance(FakeLabeler(), GenerativeLabeler)


def test_cached_prompts_are_not_asked_again(tmp_path):
    prompts = [fake_prompt(i) for i in range(5)]
    store = AnswerStore(tmp_path / "a.jsonl")
    first = FakeLabeler(max_concurrency=2)
    r1 = label_prompts(first, prompts, store, progress=False)
    assert sorted(first.asked) == [f"p{i}" for i in range(5)]
    assert (r1.prompts, r1.cached, r1.answered, r1.failed, r1.fatal, r1.missing) == (5, 0, 5, [], None, 0)
    assert r1.seconds > 0 and "5 prompts, 0 already stored, 5 asked now, 0 failed, 0 without answer" in r1.summary()
    second = FakeLabeler()
    r2 = label_prompts(second, prompts, AnswerStore(tmp_path / "a.jsonl"), progress=False)
    assert second.asked == [] and (r2.cached, r2.answered, r2.missing) == (5, 0, 0)
    other_model = FakeLabeler(model="another-model")
    label_prompts(other_model, prompts[:2], store, progress=False)
    assert other_model.asked == ["p0", "p1"] and len(store) == 7
    assert (tmp_path / "a.jsonl").read_text().count("\n") == 7


def test_transient_errors_are_counted_and_asked_again_next_run(tmp_path):
    prompts = [fake_prompt(i) for i in range(5)]
    store = AnswerStore(tmp_path / "a.jsonl")
    lab = FakeLabeler(max_concurrency=2, fail={"p1": TransientLabelerError("rate limited"),
                                               "p3": TransientLabelerError("timeout")})
    r = label_prompts(lab, prompts, store, progress=False)
    assert sorted(r.failed) == [("p1", "rate limited"), ("p3", "timeout")]
    assert (r.answered, r.cached, r.fatal, r.missing) == (3, 0, None, 2)
    assert sorted(rec["sample_id"] for rec in store.records()) == ["p0", "p2", "p4"]
    again = FakeLabeler()
    r2 = label_prompts(again, prompts, AnswerStore(tmp_path / "a.jsonl"), progress=False)
    assert sorted(again.asked) == ["p1", "p3"] and (r2.cached, r2.answered, r2.failed) == (3, 2, [])


def test_fatal_error_stops_the_run_and_keeps_what_finished(tmp_path):
    prompts = [fake_prompt(i) for i in range(6)]
    store = AnswerStore(tmp_path / "a.jsonl")
    lab = FakeLabeler(fail={"p2": LabelerFatalError("API key refused: set FAKE_API_KEY")})
    r = label_prompts(lab, prompts, store, progress=False)
    assert lab.asked == ["p0", "p1", "p2"]  # the 3rd prompt fails, nothing after it is asked
    assert r.fatal == "API key refused: set FAKE_API_KEY" and "STOPPED: API key refused" in r.summary()
    assert (r.answered, r.failed, r.missing) == (2, [], 4)
    assert sorted(rec["sample_id"] for rec in AnswerStore(tmp_path / "a.jsonl").records()) == ["p0", "p1"]
    again = FakeLabeler()
    label_prompts(again, prompts, store, progress=False)
    assert again.asked == ["p2", "p3", "p4", "p5"]


def test_fatal_check_asks_nothing(tmp_path):
    class Checked(FakeLabeler):
        checks = 0

        def check(self):
            type(self).checks += 1
            raise LabelerFatalError("unknown model 'fake-model'")

    prompts = [fake_prompt(i) for i in range(3)]
    store = AnswerStore(tmp_path / "a.jsonl")
    lab = Checked()
    r = label_prompts(lab, prompts, store, progress=False)
    assert lab.asked == [] and r.fatal == "unknown model 'fake-model'" and Checked.checks == 1
    assert (r.answered, r.missing, len(store)) == (0, 3, 0) and not (tmp_path / "a.jsonl").exists()
    label_prompts(FakeLabeler(), prompts, store, progress=False)  # fills the store
    r2 = label_prompts(Checked(), prompts, store, progress=False)
    assert Checked.checks == 1 and r2.fatal is None and r2.cached == 3  # nothing to ask: no check either


class ConcurrentLabeler(FakeLabeler):
    """Records how many complete() calls overlap; each waits (up to ``wait`` s) for a second one to start."""

    def __init__(self, wait, **kw):
        super().__init__(**kw)
        self.wait, self.active, self.max_active = wait, 0, 0
        self.cond = threading.Condition()

    def complete(self, prompt):
        with self.cond:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.active >= 2, timeout=self.wait)
        try:
            time.sleep(0.01)
            return super().complete(prompt)
        finally:
            with self.cond:
                self.active -= 1


def test_requests_run_concurrently_up_to_max_concurrency(tmp_path):
    prompts = [fake_prompt(i) for i in range(12)]
    lab = ConcurrentLabeler(wait=5, max_concurrency=4)
    r = label_prompts(lab, prompts, AnswerStore(tmp_path / "a.jsonl"), progress=False)
    assert 1 < lab.max_active <= 4 and r.answered == 12 and sorted(lab.asked) == sorted(p.sample_id for p in prompts)
    capped = ConcurrentLabeler(wait=0.02, max_concurrency=4)
    label_prompts(capped, prompts[:4], AnswerStore(tmp_path / "b.jsonl"), concurrency=1, progress=False)
    assert capped.max_active == 1 and capped.asked == ["p0", "p1", "p2", "p3"]


def test_keyboard_interrupt_propagates_and_keeps_finished_answers(tmp_path):
    prompts = [fake_prompt(i) for i in range(5)]
    store = AnswerStore(tmp_path / "a.jsonl")
    lab = FakeLabeler(fail={"p2": KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        label_prompts(lab, prompts, store, progress=False)
    assert lab.asked == ["p0", "p1", "p2"]
    assert sorted(r["sample_id"] for r in AnswerStore(tmp_path / "a.jsonl").records()) == ["p0", "p1"]
    again = FakeLabeler()
    r = label_prompts(again, prompts, AnswerStore(tmp_path / "a.jsonl"), progress=False)
    assert again.asked == ["p2", "p3", "p4"] and r.cached == 2


ANSWERS = {
    "p0": chunks_json((1, True, 0.9), (2, False), (3, False, 60)),  # ok
    "p1": chunks_json((2, True)),                                    # partial
    "p2": "no idea, sorry",                                          # malformed
    "p3": "",                                                        # empty
    # p4: unanswered
}


def _labeled_store(tmp_path):
    prompts = [fake_prompt(i) for i in range(5)] + [fake_prompt(5, template="list@1", chunk_ids=(1, 2))]
    answers = dict(ANSWERS, p5="RELEVANT: 2")
    lab = FakeLabeler(answer=lambda p: answers[p.sample_id], fail={"p4": TransientLabelerError("timeout")})
    store = AnswerStore(tmp_path / "a.jsonl")
    label_prompts(lab, prompts, store, progress=False)
    return prompts, store


def test_answers_to_labels_one_row_per_chunk_with_unanswered_rows(tmp_path):
    prompts, store = _labeled_store(tmp_path)
    df = answers_to_labels(prompts, store, "fake", "fake-model", "openai")
    assert list(df.columns) == list(LABEL_COLUMNS) and len(df) == 5 * 3 + 2
    assert str(df["label"].dtype) == "boolean" and df["chunk_index"].dtype == np.int64
    assert df["chunk_index"].tolist() == [0, 1, 2] * 5 + [0, 1]
    assert df["sample_id"].tolist() == [f"p{i}" for i in range(5) for _ in range(3)] + ["p5", "p5"]
    assert set(df["labeler"]) == {"fake"} and set(df["kind"]) == {"openai"} and set(df["model"]) == {"fake-model"}
    assert df["template"].tolist() == ["json@1"] * 15 + ["list@1"] * 2 and df["score"].isna().all()
    by = {s: g for s, g in df.groupby("sample_id")}
    assert by["p0"]["label"].tolist() == [True, False, False] and by["p0"]["status"].tolist() == ["ok"] * 3
    assert by["p0"]["confidence"].tolist()[0] == 0.9 and np.isnan(by["p0"]["confidence"].tolist()[1])
    assert by["p0"]["confidence"].tolist()[2] == 0.6
    assert by["p1"]["label"].isna().tolist() == [True, False, True] and by["p1"]["label"].iloc[1]
    assert set(by["p1"]["status"]) == {"partial"}
    assert by["p2"]["label"].isna().all() and set(by["p2"]["status"]) == {"malformed"}
    assert by["p3"]["label"].isna().all() and set(by["p3"]["status"]) == {"empty"}
    assert by["p4"]["label"].isna().all() and set(by["p4"]["status"]) == {"unanswered"}
    assert by["p5"]["label"].tolist() == [False, True] and set(by["p5"]["status"]) == {"ok"}  # list template
    assert answers_to_labels(prompts, store, "fake", "other-model", "openai")["status"].eq("unanswered").all()


def test_answer_stats_statuses_problems_and_tokens(tmp_path):
    prompts, store = _labeled_store(tmp_path)
    st = answer_stats(prompts, store, "fake", "fake-model")
    assert list(st.columns) == ["labeler", "sample_id", "status", "problems", "prompt_tokens", "completion_tokens",
                                "seconds"]
    assert st["sample_id"].tolist() == [f"p{i}" for i in range(6)]
    assert st["status"].tolist() == ["ok", "partial", "malformed", "empty", "unanswered", "ok"]
    assert st["problems"].tolist()[0] == "" and st["problems"].tolist()[4] == ""
    assert st["problems"].tolist()[1] == "no label for chunk(s) [1, 3]"
    assert st["problems"].tolist()[2] == "no label could be read" and st["problems"].tolist()[3] == "empty answer"
    answered = st[st["status"] != "unanswered"]
    assert (answered["completion_tokens"] == 20).all() and answered["prompt_tokens"].between(101, 106).all()
    assert (answered["seconds"] == 0.01).all()
    assert st.loc[4, ["prompt_tokens", "completion_tokens", "seconds"]].isna().all()


# ---- 5. the manual workflow -----------------------------------------------------------------------------------------
MANUAL = {"s1": chunks_json((1, False), (2, True, 0.9), (3, False)), "s2": "```json\n{\"1\": true, \"2\": false}\n```",
          "s3": "Chunk 1: relevant\nChunk 2: not relevant"}


def fill(template: str, answers: dict[str, str]) -> str:
    for pid, text in answers.items():
        template = template.replace(f"=== {pid} ===\n\n", f"=== {pid} ===\n{text}\n")
    return template


@pytest.fixture
def exported(ds, tmp_path):
    prompts = build_prompts(ds)
    d = export_prompts(prompts, tmp_path / "export")
    ids = {p.sample_id: prompt_id(n, p) for n, p in enumerate(prompts, start=1)}
    return prompts, d, ids


def test_export_writes_prompt_files_index_and_template(exported):
    prompts, d, ids = exported
    assert ids["s1"] == "0001-" + prompts[0].prompt_hash[:12] and ids["s3"].startswith("0003-")
    assert sorted(f.name for f in d.iterdir()) == sorted([f"{pid}.txt" for pid in ids.values()]
                                                         + ["answers_template.txt", "index.jsonl"])
    for p in prompts:
        assert (d / f"{ids[p.sample_id]}.txt").read_text() == f"=== {ids[p.sample_id]} ===\n{p.text}\n"
    index = [json.loads(line) for line in (d / "index.jsonl").read_text().splitlines()]
    assert index == [{"id": ids[p.sample_id], "sample_id": p.sample_id, "template": "json@1",
                      "prompt_hash": p.prompt_hash} for p in prompts]
    assert (d / "answers_template.txt").read_text() == "".join(f"=== {ids[s]} ===\n\n" for s in ("s1", "s2", "s3"))
    assert read_answers(d / "answers_template.txt") == {pid: "" for pid in ids.values()}


def test_import_stores_answers_is_idempotent_and_reports_changes(exported, tmp_path):
    prompts, d, ids = exported
    answers = tmp_path / "answers.txt"
    answers.write_text(fill((d / "answers_template.txt").read_text(), {ids[s]: t for s, t in MANUAL.items()}))
    assert read_answers(answers) == {ids[s]: t for s, t in MANUAL.items()}
    store_path = tmp_path / "store.jsonl"
    store = AnswerStore(store_path)
    rep = import_answers(answers, prompts, store, "deepseek-chat", "deepseek-v3 (chat)")
    assert (rep.imported, rep.already_stored, rep.changed, rep.not_answered) == (3, 0, [], [])
    assert "3 imported, 0 already stored" in rep.summary()
    recs = AnswerStore(store_path).records()
    assert [(r["sample_id"], r["kind"], r["labeler"], r["model"], r["text"]) for r in recs] == [
        (s, "manual", "deepseek-chat", "deepseek-v3 (chat)", MANUAL[s]) for s in ("s1", "s2", "s3")]
    df = answers_to_labels(prompts, store, "deepseek-chat", "deepseek-v3 (chat)", "manual")
    assert df.groupby("sample_id")["status"].first().to_dict() == {"s1": "ok", "s2": "ok", "s3": "partial"}
    assert df[df["sample_id"] == "s1"]["label"].tolist() == [False, True, False]
    # again: nothing new, nothing duplicated
    rep2 = import_answers(answers, prompts, AnswerStore(store_path), "deepseek-chat", "deepseek-v3 (chat)")
    assert (rep2.imported, rep2.already_stored, rep2.changed) == (0, 3, [])
    assert store_path.read_text().count("\n") == 3
    # a different text for a stored answer: reported, not overwritten
    answers.write_text(answers.read_text().replace(MANUAL["s3"], "Chunk 1: not relevant\nChunk 2: relevant"))
    rep3 = import_answers(answers, prompts, AnswerStore(store_path), "deepseek-chat", "deepseek-v3 (chat)")
    assert (rep3.imported, rep3.already_stored, rep3.changed) == (0, 3, [ids["s3"]])
    assert AnswerStore(store_path).records()[2]["text"] == MANUAL["s3"] and store_path.read_text().count("\n") == 3


def test_import_of_part_of_the_answers_and_an_empty_answer(exported, tmp_path):
    prompts, d, ids = exported
    answers = tmp_path / "answers.txt"
    answers.write_text(f"=== {ids['s1']} ===\n{MANUAL['s1']}\n\n=== {ids['s3']} ===\n\n\n")
    store = AnswerStore(tmp_path / "store.jsonl")
    rep = import_answers(answers, prompts, store, "man", "chat")
    assert (rep.imported, rep.not_answered) == (2, [ids["s2"]])
    empty = store.get(store.key_of("man", "chat", prompts[2]))
    assert empty is not None and empty["text"] == "" and empty["kind"] == "manual"
    assert answer_stats(prompts, store, "man", "chat")["status"].tolist() == ["ok", "unanswered", "empty"]


def test_import_errors_name_file_and_line(exported, tmp_path):
    prompts, d, ids = exported
    store_path = tmp_path / "store.jsonl"
    store = AnswerStore(store_path)
    bad = tmp_path / "bad.txt"

    bad.write_text(f"=== {ids['s1']} ===\nRELEVANT: 1\n=== 0009-0123456789ab ===\nRELEVANT: 2\n")
    with pytest.raises(ManualAnswersError, match=r"bad\.txt.*0009-0123456789ab.*not among the 3 exported"):
        import_answers(bad, prompts, store, "man", "chat")

    bad.write_text(f"=== {ids['s1']} ===\nRELEVANT: 1\n=== {ids['s2']} ===\n\n=== {ids['s1']} ===\nRELEVANT: 2\n")
    with pytest.raises(ManualAnswersError) as e:
        import_answers(bad, prompts, store, "man", "chat")
    assert str(e.value) == f"{bad}:5: answer id {ids['s1']} appears twice"

    bad.write_text(f"\nHere are my answers:\n=== {ids['s1']} ===\nRELEVANT: 1\n")
    with pytest.raises(ManualAnswersError) as e:
        import_answers(bad, prompts, store, "man", "chat")
    assert str(e.value).startswith(f"{bad}:2: text before the first '=== <id> ===' line: 'Here are my answers:'")

    with pytest.raises(ManualAnswersError, match=r"missing\.txt: answers file not found"):
        import_answers(tmp_path / "missing.txt", prompts, store, "man", "chat")
    assert len(store) == 0 and not store_path.exists()  # an error imports nothing


def test_unknown_answer_id_error_names_the_line(exported, tmp_path):
    prompts, d, ids = exported
    bad = tmp_path / "bad.txt"
    bad.write_text(f"=== {ids['s1']} ===\nRELEVANT: 1\n=== 0009-0123456789ab ===\nRELEVANT: 2\n")
    with pytest.raises(ManualAnswersError, match=re.escape(f"{bad}:3:")):
        import_answers(bad, prompts, AnswerStore(tmp_path / "s.jsonl"), "man", "chat")
