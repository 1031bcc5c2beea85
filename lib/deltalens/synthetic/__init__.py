"""Part 1: tiny Mamba models trained from scratch on synthetic tasks with per-token ground truth (notebook 01).

Modules: :mod:`.tasks` (Selective Copying, Induction Heads, Query Copying with the tokens that matter),
:mod:`.models` (the tiny ``mambapy`` LM, save / load), :mod:`.train` (train to a target loss or a cap, with reuse),
:mod:`.experiment` (one experiment: seeds, Δ, ROC-AUC, probes next to controls), :mod:`.report` (its figures,
tables and conclusions), :mod:`.summary` (every experiment in one table: ``python -m deltalens.synthetic.summary``).

May import: ``core``, ``delta``.
"""
