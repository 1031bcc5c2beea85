"""One decoding rule for Python source (deltalens.core.source_text): the context dataset and the code-LM corpus read the
same bytes as the same text — UTF-8 only, a leading BOM dropped, newlines '\\n'."""

import ast
import hashlib

import pytest

from deltalens.codelm import corpus as corpus_mod
from deltalens.codelm.corpus import CorpusConfig, build_corpus
from deltalens.context import sources
from deltalens.context.sources import dir_project
from deltalens.core.source_text import decode_source, normalise_newlines

BOM = b"\xef\xbb\xbf"


def test_a_leading_bom_is_dropped_and_one_inside_the_text_is_kept():
    assert decode_source(BOM + b"x = 1\n", 100) == ("x = 1\n", None)
    assert decode_source(b"s = '\xef\xbb\xbf'\n", 100) == ("s = '\ufeff'\n", None)
    # the text is what Python itself compiles: the BOM is no character of the program
    text, _ = decode_source(BOM + b"def f():\n    return 1\n", 100)
    assert ast.dump(ast.parse(text)) == ast.dump(ast.parse((BOM + b"def f():\n    return 1\n").decode("utf-8-sig")))


def test_newlines_are_normalised_crlf_and_lone_cr():
    assert decode_source(b"a = 1\r\nb = 2\rc = 3\n", 100) == ("a = 1\nb = 2\nc = 3\n", None)
    assert decode_source(BOM + b"a = 1\r\n", 100) == ("a = 1\n", None)
    assert normalise_newlines("x\r\n\r\ny\r") == "x\n\ny\n"


@pytest.mark.parametrize("raw, reason", [
    ("# -*- coding: latin-1 -*-\nname = 'café'\n".encode("latin-1"), "not UTF-8 (invalid continuation byte at byte 37)"),
    (b"x = '\xff'\n", "not UTF-8 (invalid start byte at byte 5)"),
    (b"x = 1\x00\n", "binary (contains NUL bytes)"),
    (b"x = 1\n" * 20, "too large (120 bytes > max_file_bytes=100)"),
], ids=["latin-1 with coding line", "latin-1 byte", "NUL", "too large"])
def test_unusable_bytes_are_refused_with_the_reason_never_guessed(raw, reason):
    assert decode_source(raw, 100) == (None, reason)


def test_size_is_checked_on_the_raw_bytes_before_anything_else():
    assert decode_source(b"\xff" * 101, 100)[1].startswith("too large")
    assert decode_source(BOM + b"x" * 97, 100) == ("x" * 97, None)  # 100 bytes with the BOM: fits


def test_the_dataset_and_the_corpus_use_this_one_function():
    assert sources.decode_source is decode_source
    assert corpus_mod.decode_source is decode_source
    assert not hasattr(corpus_mod, "_decode")


def test_dataset_and_corpus_read_the_same_files_as_the_same_text(tmp_path, monkeypatch):
    src = tmp_path / "pkg"
    src.mkdir()
    files = {
        "__init__.py": b"",
        "bom_crlf.py": BOM + b"from .plain import helper\r\n\r\nVALUE = helper(1)\r\n",
        "plain.py": b"def helper(x):\n    return x + 1\n" + b"# padding line\n" * 5,
        "old_mac.py": b"A = 1\rB = 2\r",
        "latin.py": "# -*- coding: latin-1 -*-\nNAME = 'café'\n".encode("latin-1"),
        "extra.py": b"def other():\n    return 'x'\n",
    }
    for name, raw in files.items():
        (src / name).write_bytes(raw)

    project = dir_project(src, max_file_bytes=10_000)
    by_path = {p.rsplit("/", 1)[-1]: f for p, f in project.files.items()}
    skipped = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in project.skipped}
    assert by_path["bom_crlf.py"].text == "from .plain import helper\n\nVALUE = helper(1)\n"
    assert by_path["old_mac.py"].text == "A = 1\nB = 2\n"
    assert by_path["bom_crlf.py"].sha256 == hashlib.sha256(files["bom_crlf.py"]).hexdigest()  # hash of the bytes
    assert skipped["latin.py"].startswith("not UTF-8")

    entries = sorted((f"stdlib/{name}", src / name) for name in files)
    monkeypatch.setattr(corpus_mod, "_stdlib_files", lambda exclude_dirs: entries)
    corpus = build_corpus(CorpusConfig(exclude_dataset_params=None, held_out_fraction=0.01))
    texts = {f.path.rsplit("/", 1)[-1]: f.text for f in corpus.files}
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in corpus.manifest["skipped"]}
    for name in ("bom_crlf.py", "plain.py", "old_mac.py", "extra.py"):
        assert texts[name] == by_path[name].text, name
    assert reasons["latin.py"] == skipped["latin.py"]
    assert reasons["__init__.py"] == "empty"  # the corpus' own rule on top: an empty file trains nothing
