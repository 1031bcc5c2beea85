"""Re-verify the ground truth of every sample of a built dataset against the source files on disk.

For every sample: the source files still have the manifest's sha256; the prefix is exactly the completion file's
text before the target line and the target is that line (no answer text in the query); the used names appear on
the target line. For every chunk: its text is the recorded line range of its file; no chunk comes from the
completion file; a relevant chunk holds a top-level definition of each name in ``defines`` and a fresh AST index of
the completion file resolves the target line to that definition; an injected chunk comes from another project of
the same split; related and distractor chunks come from the same project and define no name the line uses.
"""

from __future__ import annotations

import re
from pathlib import Path

from .ast_index import ProjectIndex, split_lines
from .chunks import defines_any
from .schema import ContextDataset
from .sources import Project, dir_project, installed_project


class VerificationError(AssertionError):
    pass


def _reload_projects(manifest: dict, root: Path) -> dict[str, Project]:
    max_bytes = manifest.get("params", {}).get("max_file_bytes", 300_000)
    out = {}
    for src in manifest["sources"]:
        if src["kind"] == "installed":
            pr = installed_project(src["project"], max_bytes)
        elif src["kind"] == "dir":
            q = Path(src["root"])
            pr = dir_project(q if q.is_absolute() else root / q, name=src["project"], max_file_bytes=max_bytes,
                             display_root=src["root"])
        else:
            raise VerificationError(f"cannot re-read source kind {src['kind']!r} of project {src['project']!r}")
        if pr.version != src["version"]:
            raise VerificationError(f"project {src['project']!r}: version {pr.version} on disk, "
                                    f"{src['version']} in the manifest")
        for f in src["files"]:
            got = pr.files.get(f["path"])
            if got is None or got.sha256 != f["sha256"]:
                raise VerificationError(f"project {src['project']!r} file {f['path']}: changed or missing since "
                                        "the build (sha256 differs)")
        out[src["project"]] = pr
    return out


def _name_on_line(written: str, line: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(written)}(?!\w)", line) is not None


def verify(ds: ContextDataset, root: Path | None = None, max_problems: int = 20) -> dict:
    """Raise :class:`VerificationError` listing the problems found; return counts of what was checked."""
    from ..core.paths import project_root

    root = root or project_root()
    projects = _reload_projects(ds.manifest, root)
    indices = {name: ProjectIndex(pr) for name, pr in projects.items()}
    splits = ds.manifest["splits"]
    problems: list[str] = []
    checked = {"samples": 0, "relevant": 0, "related": 0, "distractor": 0, "injected": 0}

    def bad(msg):
        problems.append(msg)

    chunks_by_sample = {sid: g.sort_values("chunk_index").to_dict("records")
                        for sid, g in ds.chunks.groupby("sample_id", sort=True)}
    for s in ds.samples.to_dict("records"):
        sid = s["sample_id"]
        idx = indices.get(s["project"])
        if idx is None:
            bad(f"{sid}: project {s['project']!r} not among the manifest's sources")
            continue
        f = projects[s["project"]].files.get(s["path"])
        if f is None:
            bad(f"{sid}: completion file {s['path']} not in project {s['project']}")
            continue
        if splits.get(s["project"]) != s["split"]:
            bad(f"{sid}: split {s['split']!r} differs from the manifest's split of {s['project']!r}")
        lines = split_lines(f.text)
        t, p0 = s["target_line"], s["prefix_start_line"]
        if not (0 <= p0 <= t < len(lines)):
            bad(f"{sid}: target_line/prefix_start_line out of range")
            continue
        if s["prefix"] != "".join(lines[p0:t]):
            bad(f"{sid}: prefix is not the file's text before the target line")
        if s["target"] != lines[t].rstrip("\n") or not s["target"].strip():
            bad(f"{sid}: target is not line {t} of {s['path']}")
        if not "".join(lines[t + 1:]).startswith(s["suffix"]):
            bad(f"{sid}: suffix is not the text after the target line")
        if s["prompt"][s["query_start"]:] != s["prefix"]:
            bad(f"{sid}: the query part of the prompt is not the prefix")
        for w in s["used_names"]:
            if not _name_on_line(w, s["target"]):
                bad(f"{sid}: used name {w!r} does not appear on the target line")
        fresh = {(d.module, d.name) for d in idx.modules[f.module].uses.get(t, [])}
        used_def_names = {n for _, n in fresh}
        if not fresh:
            bad(f"{sid}: a fresh analysis finds no use of another module's definition on the target line")
        n_relevant = 0
        for c in chunks_by_sample.get(sid, []):
            cat = c["category"]
            where = f"{sid} chunk {c['chunk_index']} ({cat}, {c['project']}:{c['path']})"
            if c["project"] == s["project"] and c["path"] == s["path"]:
                bad(f"{where}: the chunk is the completion file itself")
            cp = projects.get(c["project"])
            cf = cp.files.get(c["path"]) if cp else None
            if cf is None:
                bad(f"{where}: source file not found")
                continue
            if "".join(split_lines(cf.text)[c["start_line"]:c["end_line"]]) != c["text"]:
                bad(f"{where}: text differs from lines {c['start_line']}..{c['end_line']} of the source file")
            if cat == "relevant":
                n_relevant += 1
                if not list(c["defines"]):
                    bad(f"{where}: relevant chunk without 'defines'")
                for name in c["defines"]:
                    if not defines_any(c["text"], [name]):
                        bad(f"{where}: does not define {name!r} at top level")
                    if (cf.module, name) not in fresh or c["project"] != s["project"]:
                        bad(f"{where}: the target line does not use {cf.module}.{name}")
            elif cat == "injected":
                if c["project"] == s["project"]:
                    bad(f"{where}: injected chunk from the sample's own project")
                if splits.get(c["project"]) != s["split"]:
                    bad(f"{where}: injected chunk from a project of the other split (split leak)")
            elif cat in ("related", "distractor"):
                if c["project"] != s["project"]:
                    bad(f"{where}: {cat} chunk from another project")
                if defines_any(c["text"], used_def_names):
                    bad(f"{where}: {cat} chunk defines a name the target line uses")
            else:
                bad(f"{where}: unknown category {cat!r}")
            checked[cat] = checked.get(cat, 0) + 1
        if n_relevant == 0:
            bad(f"{sid}: no relevant chunk")
        checked["samples"] += 1
        if len(problems) >= max_problems:
            break
    if problems:
        raise VerificationError(f"{len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return checked
