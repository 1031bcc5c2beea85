"""Samples: which lines become completion points, and the context chunks of each.

A sample is a completion point: a line of file F in project P that uses a definition of another module of P (found
by :mod:`.ast_index`). Its context chunks, in a seeded random order, are

1. ``relevant``: the definitions (or file windows holding them) of the names the target line uses;
2. ``related``: code from other modules of P that F imports but whose definitions the line does not use;
3. ``distractor``: code from modules of P unrelated to F (F does not import them, they do not import F);
4. ``injected``: code from another project of the same split (known irrelevant; the thesis' construction).

No chunk comes from F itself; non-relevant chunks never define a name the target line uses. Every choice draws from
a ``random.Random`` seeded by the build seed and the sample id, so a sample does not depend on the others.
"""

from __future__ import annotations

import random

from .ast_index import Definition, ProjectIndex
from .build_params import BuildParams
from .chunks import ChunkPools, cut_lines, file_window, line_chunk, pick_chunk
from .schema import assemble_prompt


def candidate_lines(index: ProjectIndex, p: BuildParams) -> list[tuple[str, int]]:
    """(module, 0-based line) of every line that can be a target, sorted."""
    out = []
    for mod, info in sorted(index.modules.items()):
        for line in sorted(info.uses):
            if line in info.import_lines or line == 0:
                continue
            t = info.lines[line].rstrip("\n").strip()
            if p.min_target_chars <= len(t) <= p.max_target_chars and not t.startswith(("#", "@")):
                out.append((mod, line))
    return out


def select_candidates(cands: list[tuple[str, int]], p: BuildParams, rng: random.Random) -> list[tuple[str, int]]:
    cands = list(cands)
    rng.shuffle(cands)
    per_file: dict[str, int] = {}
    chosen = []
    for mod, line in cands:
        if len(chosen) >= p.samples_per_project:
            break
        if per_file.get(mod, 0) >= p.max_samples_per_file:
            continue
        per_file[mod] = per_file.get(mod, 0) + 1
        chosen.append((mod, line))
    return sorted(chosen)


def make_sample(index: ProjectIndex, mod: str, line: int, pools: ChunkPools, other_pools: list[ChunkPools],
                p: BuildParams, split: str, source: str = "builder", line_category: str = "inproject",
                seed_key: str | None = None) -> tuple[dict, list[dict]] | None:
    """One sample at ``line`` of module ``mod``: its chunks by category (relevant, related, distractor, injected:
    the random draws in that order, from one generator seeded by the sample), shuffled, then the prompt and the chunk
    rows. None when the builder finds no relevant chunk for the line."""
    info = index.modules[mod]
    sample_id = f"{index.project.name}:{info.file.path}:L{line + 1}"
    rng = random.Random(f"{p.seed}:{seed_key or sample_id}")
    used = list(info.uses.get(line, []))
    used_def_names = {d.name for d in used}
    relevant_mods = {d.module for d in used}
    chunks = relevant_chunks(index, used, p)
    related, bound_into = related_chunks(rng, index, mod, pools, p, relevant_mods, used_def_names)
    chunks += related
    n_injected = p.n_injected if other_pools else 0
    excluded = {mod} | set(info.imports) | set(bound_into) | index.importers.get(mod, set()) | relevant_mods
    distractors = distractor_chunks(rng, pools, p, excluded, p.n_chunks - len(chunks) - n_injected, used_def_names)
    n_missing = p.n_chunks - len(chunks) - n_injected - len(distractors)
    chunks += distractors
    n_injected += max(n_missing, 0) if other_pools else 0  # not enough distractors: fill with injected code
    chunks += injected_chunks(rng, other_pools, p, n_injected, used_def_names)
    if not any(c["category"] == "relevant" for c in chunks) and source == "builder":
        return None
    rng.shuffle(chunks)
    return assemble_sample(index, mod, line, chunks, p, split, source, line_category, sample_id)


def relevant_chunks(index: ProjectIndex, used: list[Definition], p: BuildParams) -> list[dict]:
    """The definitions the target line uses (granularity ``definition``), or windows of their modules (``file``)."""
    project, chunks = index.project, []
    if p.granularity == "definition":
        for d in used[: p.max_relevant]:
            c = line_chunk(project, index.modules[d.module], d.start, d.end, d.name, p.chunk_chars, d.head)
            chunks.append(dict(c, category="relevant", defines=[d.name]))
    else:
        by_mod: dict[str, list[Definition]] = {}
        for d in used:
            by_mod.setdefault(d.module, []).append(d)
        for m in list(by_mod)[: p.max_relevant]:
            c = file_window(project, index.modules[m], p.chunk_chars, anchor=by_mod[m][0].head)
            defines = [d.name for d in by_mod[m] if c["start_line"] <= d.head < c["end_line"]]
            chunks.append(dict(c, category="relevant", defines=defines))
    return chunks


def related_chunks(rng: random.Random, index: ProjectIndex, mod: str, pools: ChunkPools, p: BuildParams,
                   relevant_mods: set[str], used_def_names: set[str]) -> tuple[list[dict], dict[str, list[str]]]:
    """Chunks of modules the file imports whose definitions the line does not use; also the names the file binds
    from each module (``bound_into``: a related module's chunk prefers them)."""
    info = index.modules[mod]
    bound_into: dict[str, list[str]] = {}
    for b in info.bindings.values():
        if b[0] == "name":
            d = index.resolve_name(b[1], b[2])
            if d is not None:
                bound_into.setdefault(d.module, []).append(d.name)
    related_mods = sorted((set(info.imports) | set(bound_into)) - relevant_mods - {mod})
    related_mods = [m for m in related_mods if m in pools.modules_for(p.granularity)]
    rng.shuffle(related_mods)
    chunks: list[dict] = []
    for m in related_mods:
        if len(chunks) >= p.max_related:
            break
        c = pick_chunk(rng, pools, m, p, used_def_names, prefer=bound_into.get(m))
        if c is not None:
            chunks.append(dict(c, category="related", defines=[]))
    return chunks, bound_into


def distractor_chunks(rng: random.Random, pools: ChunkPools, p: BuildParams, excluded: set[str], n: int,
                      used_def_names: set[str]) -> list[dict]:
    """Up to ``n`` chunks of the same project from modules with no import link to the file (``excluded``)."""
    dis_mods = [m for m in pools.modules_for(p.granularity) if m not in excluded]
    rng.shuffle(dis_mods)
    chunks: list[dict] = []
    for m in dis_mods:
        if len(chunks) >= n:
            break
        c = pick_chunk(rng, pools, m, p, used_def_names)
        if c is not None:
            chunks.append(dict(c, category="distractor", defines=[]))
    return chunks


def injected_chunks(rng: random.Random, other_pools: list[ChunkPools], p: BuildParams, n: int,
                    used_def_names: set[str]) -> list[dict]:
    """``n`` chunks of other projects (known irrelevant), each module at most once; gives up after 50 x n_chunks
    tries."""
    chunks: list[dict] = []
    tries = 0
    seen_inj = set()
    while len(chunks) < n and other_pools and tries < 50 * p.n_chunks:
        tries += 1
        op = rng.choice(other_pools)
        mods = op.modules_for(p.granularity)
        if not mods:
            continue
        m = rng.choice(mods)
        if (op.index.project.name, m) in seen_inj:
            continue
        c = pick_chunk(rng, op, m, p, used_def_names)
        if c is not None:
            seen_inj.add((op.index.project.name, m))
            chunks.append(dict(c, category="injected", defines=[]))
    return chunks


def assemble_sample(index: ProjectIndex, mod: str, line: int, chunks: list[dict], p: BuildParams, split: str,
                    source: str, line_category: str, sample_id: str) -> tuple[dict, list[dict]]:
    """The sample record (prefix up to ``prefix_chars`` before the line, suffix, prompt with the chunks' character
    spans) and one row per chunk."""
    info = index.modules[mod]
    project, f, lines = index.project, info.file, info.lines
    pstart = line
    total = 0
    while pstart > 0 and (pstart == line or total + len(lines[pstart - 1]) <= p.prefix_chars):
        total += len(lines[pstart - 1])
        pstart -= 1
    prefix = "".join(lines[pstart:line])
    send = cut_lines(lines, line + 1, len(lines), p.suffix_chars) if line + 1 < len(lines) else line + 1
    suffix = "".join(lines[line + 1: send]) if p.suffix_chars > 0 else ""
    if p.suffix_chars > 0 and len(suffix) > p.suffix_chars:
        suffix = suffix[: p.suffix_chars]
    prompt, spans, query_start = assemble_prompt(chunks, f.path, prefix, p.header)
    sample = {
        "sample_id": sample_id, "source": source, "project": project.name, "project_version": project.version,
        "split": split, "path": f.path, "target_line": line, "prefix_start_line": pstart,
        "line_category": line_category, "prefix": prefix, "target": lines[line].rstrip("\n"), "suffix": suffix,
        "used_names": list(info.used_names.get(line, [])), "n_chunks": len(chunks), "prompt": prompt,
        "query_start": query_start,
    }
    rows = []
    for i, (c, (a, b)) in enumerate(zip(chunks, spans)):
        rows.append({"sample_id": sample_id, "chunk_index": i, "category": c["category"], "project": c["project"],
                     "path": c["path"], "name": c["name"], "start_line": c["start_line"], "end_line": c["end_line"],
                     "defines": c["defines"], "text": c["text"], "char_start": a, "char_end": b})
    return sample, rows


def assign_splits(names: list[str], p: BuildParams) -> dict[str, str]:
    names = sorted(names)
    rng = random.Random(f"{p.seed}:split")
    order = list(names)
    rng.shuffle(order)
    n_test = round(len(names) * float(p.test_fraction))
    if len(names) >= 2:
        n_test = min(max(n_test, 1), len(names) - 1)
    test = set(order[:n_test])
    return {n: ("test" if n in test else "dev") for n in names}
