"""The Makefile's per-part dependencies (lib/deltalens/tools/deps.py): static import closures of notebooks and modules."""

import ast
import subprocess
import sys

from deltalens.core.paths import project_root
from deltalens.tools.deps import closure, imported_modules

ROOT = project_root()
LIB = ROOT / "lib/deltalens"


def names(paths):
    return {str(p.relative_to(LIB)) for p in paths}


def test_notebook_closures_hold_what_they_run_and_not_the_other_parts():
    syn = names(closure([str(ROOT / "notebooks/01_synthetic.ipynb")]))
    assert {"__init__.py", "synthetic/experiment.py", "delta/capture.py", "delta/adapters.py", "synthetic/tasks.py",
            "synthetic/train.py", "synthetic/models.py"} <= syn
    assert not syn & {"extract/run.py", "analysis/__init__.py", "lm/forward.py", "context/build.py",
                      "core/chunk_columns.py"}
    ana = names(closure([str(ROOT / "notebooks/04_analysis.ipynb")]))
    # ranking via analysis, hidden_attention via a lazy import inside lm.forward, context/__init__ via 'from ... import'
    assert {"analysis/__init__.py", "analysis/ranking.py", "analysis/filtering.py", "lm/forward.py",
            "delta/hidden_attention.py", "context/__init__.py", "context/schema.py"} <= ana
    assert "synthetic/experiment.py" not in ana and "labeling/pipeline.py" not in ana


def test_module_entry_points_include_their_main_and_relative_imports():
    cl = names(closure(["deltalens.codelm"]))
    assert {"codelm/__init__.py", "codelm/__main__.py", "codelm/train.py", "codelm/context_data.py",
            "core/params.py"} <= cl
    assert "synthetic/experiment.py" not in cl and "extract/run.py" not in cl


def test_relative_imports_resolve_against_the_module():
    src = "from ..core.params import check_int\nfrom . import corpus\nfrom .model import build_lm\nimport json\n"
    assert imported_modules(src, "deltalens.codelm.train") == {"deltalens.core.params", "deltalens.codelm",
                                                                "deltalens.codelm.corpus", "deltalens.codelm.model"}
    assert imported_modules("from .build import x", "deltalens.context", is_package=True) == {"deltalens.context.build"}


def test_the_package_has_no_dynamic_imports():
    """deps.py is static: an importlib.import_module / __import__ of a package module would hide a dependency."""
    for f in LIB.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                    # the package root itself (its __init__, always a dependency) is fine
                    assert not str(node.args[0].value).startswith("deltalens."), f"{f}: dynamic import"
                if name == "import_module":
                    raise AssertionError(f"{f}: importlib.import_module (deps.py cannot see it)")


def test_the_script_runs_with_a_bare_python_and_prints_paths():
    out = subprocess.run([sys.executable, "-S", str(LIB / "tools/deps.py"), "notebooks/01_synthetic.ipynb"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert "lib/deltalens/synthetic/experiment.py" in out and all((ROOT / p).is_file() for p in out)


def test_an_unknown_entry_fails_loudly():
    """The Makefile no longer falls back to the whole package: a stale module path must stop make."""
    res = subprocess.run([sys.executable, "-S", str(LIB / "tools/deps.py"), "deltalens.no_such_module"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode != 0 and "deltalens.no_such_module" in res.stderr
