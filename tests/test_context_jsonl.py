"""The JSONL format for user data: round trip, and errors with line number and field."""

import json

import pytest

from deltalens.context import JSONLError, load, load_jsonl, save, validate, write_jsonl


def _sample(i=0, **kw):
    s = {"sample_id": f"repo:app.py:L{i}", "project": "repo", "path": "app.py",
         "prefix": "from util import helper\n\ndef f(x):\n", "target": "    return helper(x)",
         "chunks": [{"text": "def helper(x):\n    return x + 1\n", "category": "relevant", "path": "util.py",
                     "defines": ["helper"]},
                    {"text": "def other():\n    pass\n", "category": "injected", "project": "elsewhere",
                     "path": "other.py"}]}
    s.update(kw)
    return s


def _write(tmp_path, objs, raw_lines=()):
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps(o) + "\n" for o in objs) + "".join(raw_lines))
    return p


def test_load_and_round_trip(tmp_path):
    ds = load_jsonl(_write(tmp_path, [_sample(1), _sample(2, split="test", suffix="\n")]))
    validate(ds)
    assert len(ds) == 2 and list(ds.chunks["category"][:2]) == ["relevant", "injected"]
    s = ds.sample(0)
    c = s["chunks"][0]
    assert s["prompt"][c["char_start"]:c["char_end"]] == c["text"]
    assert s["prompt"][s["query_start"]:] == s["prefix"]
    assert s["chunks"][0]["project"] == "repo"  # defaults to the sample's project
    save(ds, tmp_path / "out")
    again = load(tmp_path / "out")
    write_jsonl(again, tmp_path / "back.jsonl")
    back = load_jsonl(tmp_path / "back.jsonl")
    assert back.samples.equals(ds.samples) and back.chunks.equals(ds.chunks)


@pytest.mark.parametrize("mutate, line, field", [
    (lambda s: s.pop("target"), 2, "'target': missing"),
    (lambda s: s.update(prefix=3), 2, "'prefix': expected string"),
    (lambda s: s.update(chunks="x"), 2, "'chunks': expected list"),
    (lambda s: s["chunks"][1].pop("text"), 2, "'chunks[1].text': missing"),
    (lambda s: s["chunks"][1].update(category="maybe"), 2, "'chunks[1].category': expected one of"),
    (lambda s: s["chunks"][0].update(start_line="10"), 2, "'chunks[0].start_line': expected integer"),
    (lambda s: s["chunks"][0].update(defines=[]), 2, "'chunks[0].defines'"),
    (lambda s: s.update(split="train"), 2, "'split'"),
    (lambda s: s.update(target="a\nb"), 2, "'target': must be a single line"),
    (lambda s: s.update(colour="red"), 2, "'colour': unknown field"),
    (lambda s: s.update(sample_id="repo:app.py:L1"), 2, "'sample_id': duplicate"),
])
def test_errors_name_line_and_field(tmp_path, mutate, line, field):
    bad = _sample(2)
    mutate(bad)
    p = _write(tmp_path, [_sample(1), bad])
    with pytest.raises(JSONLError) as e:
        load_jsonl(p)
    assert f"line {line}: field {field}" in str(e.value)


def test_invalid_json_empty_and_missing_file(tmp_path):
    p = _write(tmp_path, [_sample(1)], raw_lines=["\n", "{not json}\n"])
    with pytest.raises(JSONLError, match=r"line 3: invalid JSON"):
        load_jsonl(p)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(JSONLError, match="no samples"):
        load_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(JSONLError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")
    p = _write(tmp_path, [_sample(1, split="dev"), _sample(2, split="test")])
    with pytest.raises(JSONLError, match=r"line 2: field 'split': project 'repo' is 'dev' on line 1"):
        load_jsonl(p)
