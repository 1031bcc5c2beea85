"""The identifier-recall curriculum: training prompts whose target line can only be predicted by copying from a chunk.

In a code-completion sample (:mod:`deltalens.context`) the target line uses names that the relevant chunks define.
A small LM that never had to read its chunks predicts those names from the file prefix or from its memory of the
project, so reading pays little. Here every such name is renamed consistently, in the chunks, the file prefix, the
target line and the suffix, to a fresh name the model has never seen (a seeded draw of syllables, in the name's own
case style), so the only evidence for the renamed tokens of the target line is the definition in a chunk (or an
import line of the prefix that also names it).

Renaming works on Python's own tokens (``tokenize``), never on raw text: only ``NAME`` tokens change, so strings,
comments and other identifiers that merely contain the name are untouched. A name is renamed where it stands bare
(``name``, ``def name``, ``class name``, ``name = ...``, ``from .m import name``) or as an attribute of a project
module the target line uses it through (``mod.name`` when the sample's ``used_names`` says ``mod.name``); never as
a keyword argument (``f(name=...)``), never as an attribute of anything else (``obj.name``), and never when the
name is a keyword, a builtin, a dunder or shorter than 2 characters. A text that Python's tokenizer cannot read
(a fragment cut inside a multi-line string, an impossible dedent) makes the whole sample unrenamed: counted, never
half-renamed.

Two synthetic sequence kinds train the copying itself (token level, from the training corpus stream only):
:func:`repeated_span` — a span of code, unrelated code, then the span again (loss on the repeat) — and
:func:`identifier_pairs` — MQAR in code form: ``name = value`` lines of fresh names, then some of them read again.
"""

from __future__ import annotations

import builtins
import io
import keyword
import random
import re
import tokenize
from dataclasses import dataclass

import torch

RESERVED = frozenset(keyword.kwlist) | frozenset(keyword.softkwlist) | frozenset(dir(builtins))
SYLLABLES = ("ka", "zu", "mor", "vex", "tal", "bri", "qu", "dor", "fen", "lix", "gra", "pol", "nim", "sar", "tev",
             "jo", "wum", "hep", "rad", "yol", "cus", "zim", "bek", "ost", "fla", "tro", "vin", "gup", "leb", "mau")


class RenameError(ValueError):
    """A text the tokenizer cannot read, or a rename that would collide; the sample stays as it is."""


def renameable(name: str) -> bool:
    return (name.isidentifier() and len(name) >= 2 and name not in RESERVED
            and not (name.startswith("__") and name.endswith("__")))


def fresh_name(original: str, rng: random.Random, taken: set[str]) -> str:
    """A new identifier in ``original``'s case style (CamelCase, UPPER_CASE, snake_case; a leading ``_`` kept),
    2-3 syllable words, never in ``taken`` nor reserved."""
    lead = "_" * (len(original) - len(original.lstrip("_")))
    core = original.lstrip("_")
    for _ in range(1000):
        words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(rng.randint(1, 2))]
        if core[:1].isupper() and not core.isupper():
            new = "".join(w.capitalize() for w in words)
        elif core.isupper() and len(core) > 1:
            new = "_".join(words).upper()
        else:
            new = "_".join(words)
        new = lead + new
        if new not in taken and renameable(new):
            taken.add(new)
            return new
    raise RenameError(f"no fresh name for {original!r} after 1000 draws")


def rename_text(text: str, bare: dict[str, str], attrs: dict[tuple[str, str], str], cut: str = "end") -> str:
    """``text`` with its NAME tokens renamed: ``bare`` maps a name standing on its own, ``attrs`` maps
    ``(module, name)`` for ``module.name``. ``cut``: the side where the fragment was cut from its file ('end' for a
    chunk or a suffix, 'start' for a file prefix): a triple-quoted string left open there is closed on that side.
    Raises :class:`RenameError` when ``tokenize`` cannot read the text."""
    if not text:
        return text
    toks, origin = _tokens(text, cut)
    edits: list[tuple[int, int, str]] = []
    depth = 0
    for i, t in enumerate(toks):
        if t.type == tokenize.OP:
            depth += t.string in "([{"
            depth -= t.string in ")]}"
            continue
        if t.type != tokenize.NAME or t.start[0] not in origin:
            continue
        prev = toks[i - 1] if i > 0 else None
        new = None
        if prev is not None and prev.type == tokenize.OP and prev.string == ".":
            owner = toks[i - 2] if i > 1 else None
            if owner is not None and owner.type == tokenize.NAME and (owner.string, t.string) in attrs:
                new = attrs[(owner.string, t.string)]
        elif t.string in bare:
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            kwarg = (depth > 0 and nxt is not None and nxt.type == tokenize.OP and nxt.string == "="
                     and prev is not None and prev.type == tokenize.OP and prev.string in "(,")
            if not kwarg:
                new = bare[t.string]
        if new is not None:
            line_start, shift = origin[t.start[0]]
            edits.append((line_start + shift + t.start[1], line_start + shift + t.end[1], new))
    out = text
    for a, b, new in reversed(edits):
        if out[a:b] not in bare and out[a:b] not in {n for _, n in attrs}:
            raise RenameError(f"internal: offset mismatch at {a}")
        out = out[:a] + new + out[b:]
    return out


def _tokens(text: str, cut: str = "end") -> tuple[list, dict[int, tuple[int, int]]]:
    """Python's tokens of a code fragment and, per token row that belongs to ``text``, (offset of the line in
    ``text``, leading whitespace removed). Fragments start and end anywhere: every line is tokenized without its
    indentation (so an indented start or a dedent to an unseen level is no error; only NAME positions are used,
    shifted back), an unclosed bracket at the end is fine, and a triple-quoted string left open by the cut is
    closed on the ``cut`` side (tried with both quote kinds). A text that still does not tokenize is refused."""
    lines = text.splitlines(keepends=True)
    stripped, origin, pos = [], {}, 0
    for ln in lines:
        body = ln.lstrip(" \t")
        stripped.append(body)
        origin[len(stripped)] = (pos, len(ln) - len(body))
        pos += len(ln)
    plain = "".join(stripped)
    tries = [(plain, 0)]
    for q in ('"""', "'''"):
        tries.insert(len(tries) if cut == "start" else 1, (plain + "\n" + q + "\n", 0))
        tries.insert(1 if cut == "start" else len(tries), (q + "\n" + plain, 1))
    last = None
    for src, row_shift in tries:
        try:
            toks = _tokenize(src)
        except (tokenize.TokenError, IndentationError, SyntaxError, RenameError) as e:
            last = e
            continue
        if row_shift:  # rows of the prepended quote line belong to no line of the text
            toks = [t._replace(start=(t.start[0] - row_shift, t.start[1]), end=(t.end[0] - row_shift, t.end[1]))
                    for t in toks]
        return toks, origin
    raise RenameError(f"tokenize: {last}")


def _tokenize(src: str) -> list:
    out = []
    try:
        for t in tokenize.generate_tokens(io.StringIO(src).readline):
            if t.type == tokenize.ERRORTOKEN and t.string[:1] in ("'", '"'):
                raise RenameError(f"unterminated string at line {t.start[0]}")
            out.append(t)
    except tokenize.TokenError as e:
        if "EOF in multi-line statement" not in str(e):
            raise
    return out


@dataclass(frozen=True)
class Renamed:
    sample: dict                 # the renamed sample (a new dict; chunks are new dicts)
    mapping: dict[str, str]      # original name -> fresh name
    renamed_tokens: int          # how many NAME tokens of the target line changed


def rename_sample(sample: dict, rng: random.Random) -> Renamed | None:
    """``sample`` with the names its target line takes from its relevant chunks renamed consistently everywhere
    (see the module docstring); None when the sample has no renameable name or a text cannot be tokenized."""
    defined: set[str] = set()
    for c in sample["chunks"]:
        if c.get("category") == "relevant":
            defined.update(c.get("defines") or ())
    bare_names, attr_names = set(), set()
    for used in defined:
        parts = used.split(".")
        if not renameable(parts[-1]):
            continue
        if len(parts) == 1:
            bare_names.add(parts[-1])
        else:
            attr_names.add((parts[-2], parts[-1]))
    if not bare_names and not attr_names:
        return None
    texts = [sample["prefix"], sample["target"], sample.get("suffix") or ""] + [c["text"] for c in sample["chunks"]]
    taken = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", "\n".join(texts)))
    mapping: dict[str, str] = {}
    for name in sorted(bare_names | {n for _, n in attr_names}):
        mapping[name] = fresh_name(name, rng, taken)
    bare = {n: mapping[n] for n in bare_names}
    # a definition `def name` in the chunk is bare even when the line says `mod.name`
    bare_everywhere = {**bare, **{n: mapping[n] for _, n in attr_names}}
    attrs = {(m, n): mapping[n] for m, n in attr_names}
    try:
        target = rename_text(sample["target"], bare, attrs)
        prefix = rename_text(sample["prefix"], bare, attrs, cut="start")
        suffix = rename_text(sample.get("suffix") or "", bare, attrs)
        chunks = []
        for c in sample["chunks"]:
            names = bare_everywhere if c.get("category") == "relevant" else bare
            chunks.append({**c, "text": rename_text(c["text"], names, attrs),
                           "defines": [_rename_dotted(d, mapping) for d in (c.get("defines") or [])]})
    except RenameError:
        return None
    changed = sum(a != b for a, b in zip(_name_tokens(sample["target"]), _name_tokens(target)))
    if changed == 0:
        return None
    out = {**sample, "prefix": prefix, "target": target, "suffix": suffix, "chunks": chunks,
           "used_names": [_rename_dotted(u, mapping) for u in (sample.get("used_names") or [])]}
    return Renamed(out, mapping, changed)


def _rename_dotted(name: str, mapping: dict[str, str]) -> str:
    parts = name.split(".")
    parts[-1] = mapping.get(parts[-1], parts[-1])
    return ".".join(parts)


def _name_tokens(text: str) -> list[str]:
    try:
        return [t.string for t in _tokens(text)[0] if t.type == tokenize.NAME]
    except RenameError:
        return []


# ---- synthetic copying sequences (token level) ------------------------------------------------------------------------
def random_token_ids(tokenizer) -> torch.Tensor:
    """The ids a random span is drawn from (:func:`repeated_span`): the tokenizer's whole vocabulary but its special
    tokens."""
    special = set(tokenizer.all_special_ids)
    return torch.tensor([i for i in range(len(tokenizer)) if i not in special])


def repeated_span(stream: torch.Tensor, span: int, distance: int, total: int, gen: torch.Generator,
                  random_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, int, int]:
    """(a ``total + 1``-token sequence: filler, a span of ``span`` code tokens, ``distance`` tokens of other code,
    the same span again, more code; the start and end of the repeat). Everything is cut from ``stream`` at seeded
    offsets; the repeat's loss is what a copying model drives to zero. ``random_ids`` (1-D ids): the span is drawn
    uniformly from them instead (random tokens: nothing but the first occurrence predicts the repeat — the induction
    task in its purest form, which a small model learns in far fewer steps than copying of code)."""
    if span + distance + span > total:
        raise ValueError(f"repeated_span: span {span} + distance {distance} + span > total {total}")
    hi = stream.numel() - total - 2
    off = lambda: int(torch.randint(0, hi, (), generator=gen))  # noqa: E731
    if random_ids is None:
        s = stream[off():][:span]
    else:
        s = random_ids[torch.randint(0, random_ids.numel(), (span,), generator=gen)]
    lead = int(torch.randint(0, total - 2 * span - distance + 1, (), generator=gen))
    parts = [stream[off():][:lead], s, stream[off():][:distance], s]
    head = torch.cat(parts)
    rest = stream[off():][:total + 1 - head.numel()]
    seq = torch.cat([head, rest])
    start = lead + span + distance
    return seq, start, start + span


def identifier_pairs(n_pairs: int, n_queries: int, rng: random.Random) -> tuple[str, list[tuple[int, int]]]:
    """MQAR in code form: ``n_pairs`` lines ``<fresh name> = <fresh name>``, then ``n_queries`` lines
    ``assert <key> == <value>`` for keys drawn again; returns the text and the character spans of the queried values
    (the positions to score)."""
    taken: set[str] = set()
    keys = [fresh_name("k", rng, taken) for _ in range(n_pairs)]
    values = [fresh_name("V" if rng.random() < 0.3 else "v", rng, taken) for _ in range(n_pairs)]
    text = "".join(f"{k} = {v}\n" for k, v in zip(keys, values)) + "\n"
    spans = []
    for j in rng.sample(range(n_pairs), min(n_queries, n_pairs)):
        text += f"assert {keys[j]} == "
        spans.append((len(text), len(text) + len(values[j])))
        text += values[j] + "\n"
    return text, spans
