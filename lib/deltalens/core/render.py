"""Show Δ on readable text: a prompt's tokens coloured by a per-token value (e.g. channel-mean Δ of one layer).

``token_html`` gives an HTML snippet for the notebook (hover a token to see its value); ``token_grid`` a matplotlib
figure (tokens laid out in rows, one panel per layer) to save next to the other figures.
"""

from __future__ import annotations

import html

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colors as mcolors


def _norm(values: np.ndarray) -> mcolors.Normalize:
    v = np.asarray(values, dtype=float)
    lo, hi = np.nanpercentile(v, 2), np.nanpercentile(v, 98)
    return mcolors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9, clip=True)


def token_html(tokens: list[str], values: np.ndarray, *, cmap: str = "viridis", title: str = "",
               marks: np.ndarray | None = None) -> str:
    """Tokens as <span>s whose background is ``values`` on ``cmap`` (2nd-98th percentile range); ``marks`` (bool per
    token) underlines tokens, e.g. those of relevant chunks."""
    norm, cm = _norm(values), plt.get_cmap(cmap)
    out = [f"<div style='font-family:monospace;font-size:12px;line-height:1.7;white-space:pre-wrap'>"
           f"<b>{html.escape(title)}</b><br>"]
    for i, (tok, v) in enumerate(zip(tokens, values)):
        r, g, b, _ = cm(norm(v))
        fg = "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#fff"
        style = f"background:rgb({int(r * 255)},{int(g * 255)},{int(b * 255)});color:{fg}"
        if marks is not None and marks[i]:
            style += ";text-decoration:underline;text-decoration-color:#f5c518;text-decoration-thickness:3px"
        out.append(f"<span title='{v:.4g}' style='{style}'>{html.escape(tok)}</span>")
    out.append("</div>")
    return "".join(out)


def token_grid(tokens: list[str], values_by_layer: dict[str, np.ndarray], *, per_row: int = 24, max_tokens: int = 480,
               cmap: str = "viridis", title: str = "", marks: np.ndarray | None = None) -> plt.Figure:
    """One panel per layer: the first ``max_tokens`` tokens in rows of ``per_row``, each cell coloured by the value;
    ``marks`` (bool per token) outlines cells in yellow, e.g. the tokens of relevant chunks."""
    n = min(len(tokens), max_tokens)
    rows = -(-n // per_row)
    fig, axes = plt.subplots(len(values_by_layer), 1, figsize=(per_row * 0.62, 0.26 * rows * len(values_by_layer) + 1),
                             squeeze=False)
    for ax, (name, vals) in zip(axes[:, 0], values_by_layer.items()):
        grid = np.full(rows * per_row, np.nan)
        grid[:n] = np.asarray(vals[:n], dtype=float)
        norm = _norm(vals[:n])
        ax.imshow(grid.reshape(rows, per_row), cmap=cmap, norm=norm, aspect="auto")
        for k in range(n):
            t = tokens[k].replace("\n", "⏎").replace("\t", "→")[:7]
            ax.text(k % per_row, k // per_row, t, ha="center", va="center", fontsize=5,
                    color="white" if norm(vals[k]) < 0.55 else "black")
            if marks is not None and marks[k]:
                ax.add_patch(plt.Rectangle((k % per_row - 0.5, k // per_row - 0.5), 1, 1, fill=False,
                                           edgecolor="#f5c518", linewidth=1.2))
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(name, fontsize=9, loc="left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
