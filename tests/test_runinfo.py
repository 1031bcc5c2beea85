"""Run bookkeeping (deltalens.core.runinfo): atomic writes, strict JSON, package versions."""

import json
import math

import numpy as np
import pytest

from deltalens.core.runinfo import atomic_write, jsonable, package_versions, write_json


def test_write_json_is_strict_json_and_atomic(tmp_path):
    p = write_json(tmp_path / "sub/m.json", {"nan": float("nan"), "inf": -math.inf, "f32": np.float32(0.25),
                                             "i": np.int64(3), "b": np.bool_(True), "t": (1, 2), 7: "k",
                                             "arr": np.array([1.0, np.nan])})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "inf": None, "f32": 0.25, "i": 3, "b": True, "t": [1, 2], "7": "k",
                                "arr": [1.0, None]}
    assert not list(p.parent.glob("*.tmp"))


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")

    def boom(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_text() == "old" and not (tmp_path / "x.txt.tmp").exists()


def test_package_versions_names_missing_packages_none():
    v = package_versions(("numpy", "surely-not-installed-pkg"), python=True)
    assert v["numpy"] == np.__version__ and v["surely-not-installed-pkg"] is None and v["python"].count(".") == 2
    assert jsonable({"a": [np.float64("nan")]}) == {"a": [None]}


def test_write_json_sort_keys_gives_content_determined_bytes(tmp_path):
    a = write_json(tmp_path / "a.json", {"b": {"y": 1, "x": float("nan")}, "a": 2}, sort_keys=True).read_text()
    b = write_json(tmp_path / "b.json", {"a": 2, "b": {"x": None, "y": 1}}, sort_keys=True).read_text()
    assert a == b == json.dumps({"a": 2, "b": {"x": None, "y": 1}}, indent=1, sort_keys=True) + "\n"
    assert write_json(tmp_path / "c.json", {"b": 1, "a": 2}).read_text() == '{\n "b": 1,\n "a": 2\n}\n'  # default: as given
