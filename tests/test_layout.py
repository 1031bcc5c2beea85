"""The package's layout stays true: no import circle between modules, every subpackage imports only the floors its
``__init__`` docstring allows (``May import: ...``), and the package root holds subpackages only."""

import ast
import re

import pytest

from deltalens.core.paths import project_root
from deltalens.tools.deps import floors, house, import_arrows, import_cycles, module_graph, room_graph

LIB = project_root() / "lib/deltalens"
SUBPACKAGES = sorted(p.parent.name for p in LIB.glob("*/__init__.py"))


def allowed_imports(package: str) -> set[str]:
    """The subpackages named on the ``May import:`` line of ``package``'s ``__init__`` docstring."""
    doc = ast.get_docstring(ast.parse((LIB / package / "__init__.py").read_text())) or ""
    line = re.search(r"May import: (.*?)(?:\n\n|$)", doc, re.S)
    assert line, f"deltalens/{package}/__init__.py: its docstring says nothing of what it may import ('May import:')"
    return set(re.findall(r"``(\w+)``", line.group(1)))


def test_the_package_root_holds_subpackages_only():
    loose = sorted(p.name for p in LIB.glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules outside a subpackage: {loose}"
    assert {"core", "delta", "synthetic", "context", "lm", "extract", "codelm", "labeling", "analysis"} <= set(SUBPACKAGES)


def test_no_module_imports_itself_in_a_circle():
    cycles = import_cycles(module_graph())
    assert cycles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_subpackage_imports_only_what_its_docstring_allows():
    rooms = room_graph(module_graph())
    for package in SUBPACKAGES:
        # the package root (``import deltalens`` for its __file__) imports nothing, so naming it is always allowed
        extra = rooms.get(package, set()) - allowed_imports(package) - {"deltalens"}
        assert not extra, f"deltalens.{package} imports {sorted(extra)}, which its docstring does not allow"
    assert rooms.get("deltalens", set()) == set(), "the package root's __init__ imports nothing (parts stay apart)"


def test_the_floors_stack_with_core_at_the_bottom_and_the_analysis_at_the_top():
    stacked = floors(room_graph(module_graph()))
    assert "core" in stacked[0] and "analysis" in stacked[-1]
    assert "0 import circle(s)" in house()


def test_the_cycle_finder_finds_a_planted_circle_and_reads_imports_like_python():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"a"}}) == [["a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    with pytest.raises(ValueError, match="circle"):
        floors({"x": {"y"}, "y": {"x"}})
    # ``from pkg import sub`` points at the submodule, ``from mod import name`` at the module, relative to the file
    assert import_arrows("from ..core import params\nfrom .loading import load_lm\n", "deltalens.lm.forward") == {
        "deltalens.core.params", "deltalens.lm.loading"}
    assert import_arrows("from . import forward\n", "deltalens.lm", is_package=True) == {"deltalens.lm.forward"}
    assert import_arrows("from deltalens.context import load\nimport json\n", "x") == {"deltalens.context"}
