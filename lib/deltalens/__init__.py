"""deltalens: does Mamba's step size Δ tell which context matters?

Modules (one idea each):
    tasks     synthetic tasks with per-token ground-truth importance
    models    the tiny mambapy language model, save/load
    train     train until a target loss or a cap, with checkpoint reuse
    capture   Δ capture by forward hooks (mambapy, transformers Mamba / FalconMamba)
    scores    per-token Δ scores (mean, max, L2 norm) and control features
    metrics   ROC-AUC and classifiers on Δ vs control features
    plots     Δ map, token diagram, ROC curves
    params    parameter validation (papermill / YAML)
    paths     project paths
"""

__version__ = "0.1.0"
