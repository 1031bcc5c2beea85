"""Python source files as text: the one decoding rule of the context dataset (:mod:`deltalens.context.sources`) and
of the code-LM corpus (:mod:`deltalens.codelm.corpus`).

:func:`decode_source` turns the bytes of a ``.py`` file into the text both of them use, or says why it cannot:

* **UTF-8 only.** Bytes that are not valid UTF-8 (a Latin-1 file, with or without a PEP 263 ``# -*- coding: latin-1
  -*-`` line) are refused with the reason ``not UTF-8 (<what> at byte <n>)``; they are never guessed or replaced.
  Files with a NUL byte are refused as binary, files over ``max_bytes`` as too large (checked first, on the raw size).
* **A leading UTF-8 byte-order mark is dropped.** Python itself reads a file that starts with ``EF BB BF`` as UTF-8
  source without that mark (it is an encoding signature, not a character of the program: ``ast``, ``tokenize`` and
  ``import`` never see it). Keeping it would put an invisible U+FEFF in front of the first line of a prompt or of a
  training document, and would make a file with a BOM and the same file without one different texts. A U+FEFF
  anywhere else is text and is kept. (Before this module the dataset already dropped it; the corpus kept it — no file
  of the current corpus starts with one: the two standard-library files that do live in excluded test directories.)
* **Newlines become ``\\n``:** ``\\r\\n`` (Windows) and a lone ``\\r`` (old Mac) alike, so that line numbers agree
  with ``ast``'s and a file's text does not depend on the checkout's line endings.

Hashes of a file (the manifests' ``sha256``) are taken of the raw bytes, not of this text.
"""

from __future__ import annotations


def normalise_newlines(text: str) -> str:
    """``\\r\\n`` and lone ``\\r`` -> ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def decode_source(raw: bytes, max_bytes: int) -> tuple[str | None, str | None]:
    """``(text, None)``, or ``(None, reason)`` when the file cannot be used (see the module docstring)."""
    if len(raw) > max_bytes:
        return None, f"too large ({len(raw)} bytes > max_file_bytes={max_bytes})"
    if b"\x00" in raw:
        return None, "binary (contains NUL bytes)"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 ({e.reason} at byte {e.start})"
    if text.startswith("\ufeff"):
        text = text[1:]
    return normalise_newlines(text), None
