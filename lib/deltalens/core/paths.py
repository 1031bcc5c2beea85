"""Project paths: everything is resolved against the repository root, so notebooks work from
JupyterLab (cwd = notebooks/) and from papermill / make (cwd = repository root)."""

from __future__ import annotations

from pathlib import Path


def project_root(start: str | Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: cwd) that holds ``pyproject.toml``."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    raise FileNotFoundError(f"no pyproject.toml at or above {here}: run from inside the deltalens checkout")


def resolve(path: str | Path, root: str | Path | None = None) -> Path:
    """``path`` if absolute, else ``path`` relative to the project root — or to the working directory outside a
    checkout (the self-contained Kaggle notebook carries the package without the repository)."""
    p = Path(path)
    if p.is_absolute():
        return p
    try:
        return project_root(root) / p
    except FileNotFoundError:
        return Path(root or Path.cwd()).resolve() / p
