"""Execute every notebook once with tiny parameters (``make smoke``), through papermill's own API.

Each notebook is paired with its smoke parameter file; executed copies land in ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from ..core.paths import project_root

SMOKE = {
    "00_context_dataset.ipynb": "params/dataset/smoke.yaml",
    "01_synthetic.ipynb": "params/smoke/synthetic.yaml",
    "02_label_context.ipynb": "params/labeling/smoke.yaml",
    "03_extract_delta.ipynb": "params/extract/smoke.yaml",
    "04_analysis.ipynb": "params/analysis/smoke.yaml",
}


def run_notebook(notebook: str | Path, output: str | Path, parameters: dict, kernel: str = "deltalens") -> Path:
    """papermill.execute_notebook with the repository root as the kernel's cwd."""
    import papermill as pm

    root = project_root()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(root / notebook), str(output), parameters=parameters, kernel_name=kernel, cwd=str(root), progress_bar=False)
    return output


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/smoke")
    args = ap.parse_args(argv)
    root = project_root()
    missing = sorted(p.name for p in (root / "notebooks").glob("*.ipynb") if p.name not in SMOKE)
    if missing:
        raise SystemExit(f"no smoke parameters for notebook(s) {missing}: add them to deltalens.tools.smoke.SMOKE")
    for nb, params in SMOKE.items():
        start = time.perf_counter()
        out = run_notebook(Path("notebooks") / nb, root / args.out / "executed" / nb, yaml.safe_load((root / params).read_text()))
        print(f"{nb}: ok in {time.perf_counter() - start:.0f} s -> {out}")


if __name__ == "__main__":
    main()
