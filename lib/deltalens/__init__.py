"""deltalens: does Mamba's step size Δ tell which context matters, so it can filter the context of an LLM prompt?

One subpackage per part of the study, on a shared ground floor (``python3 lib/deltalens/tools/deps.py --house``
draws the floors; ``tests/test_layout.py`` keeps them free of circles):

    core       the ground floor: parameters, paths, run bookkeeping, source text, the one bootstrap, metrics, plots,
               similarity baselines, the chunk-table contract
    delta      the instrument: Δ capture by forward hooks for every supported mixer family, per-token Δ scores,
               hidden attention
    synthetic  part 1: tasks, tiny mambapy models, training, the experiment and its report
    context    the code-completion context dataset (chunks with known-irrelevant code mixed in)
    labeling   part 2: LLM and reference labels of the chunks, label quality
    lm         a pretrained LM over prompts: loading, layouts, batched forwards
    codelm     the local code LMs the study trains
    extract    part 3: Δ per context chunk over a dataset (resumable, shardable, Kaggle)
    filter     Δ (and every scorer the study compares) as a context filter for a user's own prompts
    analysis   part 4: does Δ predict relevance, and does filtering by it keep completions good
    tools      the dependency drawer and the smoke runner

The package root imports nothing, so importing one part never loads another.
"""

__version__ = "0.1.0"
