"""A pretrained LM on code-completion prompts: loading it, laying out prompts, batched forwards under the capture.

Modules: :mod:`.loading` (model, dtype, device and scan path, and the facts a run records), :mod:`.forward`
(batched forwards with per-token Δ statistics, hidden attention, self-information and the target line's loss),
:mod:`.prompts` (context-first / query-first layouts with character spans, spans -> tokens), :mod:`.global_channels`
(LongMamba's global channels: which channels decay slowest, chosen on dev prompts).

Used by the extraction (part 3), the code LM's held-out evaluation and the analysis' filtering curves.

May import: ``core``, ``delta``, ``context``.
"""
