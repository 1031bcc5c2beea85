"""The Makefile's helpers, not part of the study: :mod:`.deps` (which package files a notebook can import: the
per-part dependencies; runs with any Python 3, no third-party package) and :mod:`.smoke` (every notebook once with
tiny parameters).

May import: ``core``.
"""
