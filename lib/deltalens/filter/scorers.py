"""Every scorer the study compares, as one interface: ``score(prompts) -> [(n_chunks,) float]`` (higher: keep first;
NaN: a chunk the scorer could not see, e.g. truncated away), plus ``settings()`` (what a result records) and, for the
LM scorers, the LM's ``tokenizer``.

LM scorers (one loaded model, one forward per prompt for all its chunks, prompts batched by
:func:`deltalens.lm.forward.forward_all` within a memory budget; per-chunk numbers by the extraction's own
:mod:`deltalens.extract.chunk_stats`, so a filter's score equals the chunk table's column for the same prompt):

* ``delta`` — the mean of a per-token Δ statistic (``mean``, ``mean_log``, ``l2``, ``max``) over the chunk's tokens
  at one layer (the model's own layer number, as in the chunk table's ``delta:<run>:L<layer>:<stat>``);
* ``decimation`` — the share of the chunk's tokens that DeciMamba's decimation keeps at one layer (``statistic``: the
  kept percentage of the prompt's tokens, 10 / 25 / 50);
* ``hidden_attention`` — the hidden-attention mass (Ali et al.) that the last ``prefix_tokens`` positions of the
  query give the chunk at one layer (Mamba-1 families: the scan's own inputs are needed);
* ``self_information`` — the mean NLL of the chunk's tokens in context;
* ``leave_one_out`` — the oracle: target-line loss without the chunk minus with all chunks (one more forward per
  chunk; needs each prompt's ``target``).

Text scorers: ``bm25`` and ``tfidf`` (fit on the prompt's own chunks, so a prompt's scores never depend on the other
prompts of a batch) of the query's last ``query_lines`` lines, ``embedding`` (all-MiniLM-L6-v2 offline) and
``random`` (seeded by ``seed`` and the prompt id). ``sign`` multiplies every score (the dev choice of notebook 04).
"""

from __future__ import annotations

import hashlib
import inspect
import warnings

import numpy as np

from ..core.chunk_columns import DECIMATION_SHARES, DELTA_STATS, decimation_column
from ..core.params import ParameterError, check_choice, check_float, check_int
from .prompts import FilterPrompt, PromptError

LM_SCORERS = ("delta", "decimation", "hidden_attention", "self_information", "leave_one_out")
TEXT_SCORERS = ("bm25", "tfidf", "embedding", "random")
SCORERS = LM_SCORERS + TEXT_SCORERS
LAYERED = ("delta", "decimation", "hidden_attention")
DECIMATION_PERCENTS = tuple(str(round(q * 100)) for q in DECIMATION_SHARES)
DEFAULT_STAT = {"delta": "mean", "decimation": DECIMATION_PERCENTS[1], "hidden_attention": "prefix_end"}
STATS = {"delta": DELTA_STATS, "decimation": DECIMATION_PERCENTS, "hidden_attention": ("prefix_end",)}


def check_prompts(scorer: str, prompts: list[FilterPrompt]) -> None:
    """What a scorer needs of the prompts, checked before any model loads (the oracle needs every ``target``)."""
    if scorer == "leave_one_out":
        missing = [p.id for p in prompts if not p.target]
        if missing:
            raise PromptError(f"scorer 'leave_one_out' needs each prompt's 'target' (the text to complete); "
                              f"missing in {len(missing)} prompt(s), e.g. {missing[:3]}")


class RandomScorer:
    name = "random"
    tokenizer = None

    def __init__(self, seed: int = 0):
        self.seed = check_int("seed", seed, where="random scorer")

    def settings(self) -> dict:
        return {"scorer": self.name, "seed": self.seed}

    def score(self, prompts: list[FilterPrompt], progress: bool = False) -> list[np.ndarray]:
        out = []
        for p in prompts:
            digest = hashlib.sha256(f"{self.seed}:{p.id}".encode()).digest()
            out.append(np.random.default_rng(int.from_bytes(digest[:8], "little")).random(len(p.chunks)))
        return out


class TextScorer:
    """``bm25`` / ``tfidf`` / ``embedding`` similarity of each chunk to the query's last ``query_lines`` lines."""

    tokenizer = None

    def __init__(self, name: str, *, query_lines: int | None = 30, sign: float = 1.0, embedding_model=None,
                 device: str = "cpu"):
        self.name = check_choice("scorer", name, ("bm25", "tfidf", "embedding"))
        self.query_lines = None if query_lines is None else check_int("query_lines", query_lines, minimum=1)
        self.sign = check_float("sign", sign)
        self._embedder = self.model = None
        if name == "embedding":
            from ..core.similarity import EmbeddingScorer

            self._embedder = EmbeddingScorer(embedding_model, device=device)
            self.model = self._embedder.name

    def settings(self) -> dict:
        s = {"scorer": self.name, "query_lines": self.query_lines, "sign": self.sign}
        if self.name == "embedding":
            s["model"] = self.model
        return s

    def score(self, prompts: list[FilterPrompt], progress: bool = False) -> list[np.ndarray]:
        from ..core.similarity import TfidfScorer, bm25_scores, query_text

        out = []
        for p in prompts:
            texts = [c.text for c in p.chunks]
            query = query_text(p.query, self.query_lines)
            if not texts:
                out.append(np.zeros(0))
            elif self.name == "bm25":
                out.append(self.sign * bm25_scores(query, texts))
            elif self.name == "tfidf":
                try:
                    out.append(self.sign * TfidfScorer(texts + [query]).scores(query, texts))
                except ValueError:  # no code token in the prompt at all: nothing to tell the chunks apart
                    out.append(np.zeros(len(texts)))
            else:
                out.append(self.sign * self._embedder.scores(query, texts))
        return out


class LMScorer:
    """A scorer read from one forward of a loaded LM per prompt (``delta``, ``decimation``, ``hidden_attention``,
    ``self_information``) or from one forward per chunk more (``leave_one_out``). ``model``: a local model folder
    or hub id (loaded by :func:`deltalens.lm.loading.load_lm` with ``dtype`` / ``device``), or an already loaded
    ``(model, tokenizer)`` pair."""

    def __init__(self, name: str, model, *, layer: int | None = None, statistic: str | None = None, sign: float = 1.0,
                 order: str = "context_first", query_chars: int = 800, max_tokens: int = 8192,
                 prefix_tokens: int = 16, dtype: str = "float32", device: str = "cpu", scan: str = "auto",
                 batch_tokens: int | str = "auto"):
        from ..lm.loading import DTYPES, SCANS
        from ..lm.prompts import ORDERS, LayoutPolicy

        self.name = check_choice("scorer", name, LM_SCORERS)
        if name in LAYERED:
            statistic = DEFAULT_STAT[name] if statistic is None else str(statistic)
            check_choice("statistic", statistic, STATS[name], where=f"scorer {name!r}")
            if layer is None:
                raise ParameterError(f"scorer {name!r}: parameter layer is required (the model's own layer number, "
                                     "as in the chunk table's columns); ContextFilter.from_analysis takes the one "
                                     "notebook 04 chose on dev")
            check_int("layer", layer, minimum=0, where=f"scorer {name!r}")
        elif layer is not None or statistic is not None:
            raise ParameterError(f"scorer {name!r} has no layer or statistic (got layer={layer!r}, "
                                 f"statistic={statistic!r})")
        self.layer, self.statistic = layer, statistic
        self.sign = check_float("sign", sign)
        check_choice("order", order, ORDERS)
        check_choice("dtype", dtype, DTYPES)
        check_choice("scan", scan, SCANS)
        check_int("prefix_tokens", prefix_tokens, minimum=1)
        if batch_tokens != "auto":
            check_int("batch_tokens", batch_tokens, minimum=1)
        self.policy = LayoutPolicy(order, check_int("query_chars", query_chars, minimum=0),
                                   check_int("max_tokens", max_tokens, minimum=16), "drop_chunks")
        self.prefix_tokens, self.dtype, self.device, self.scan, self.batch_tokens = (
            prefix_tokens, dtype, device, scan, batch_tokens)
        self.lm, self.tokenizer, self.model_name = self._load(model)
        self._check_model()

    def _load(self, model):
        from ..lm.loading import load_lm, set_scan

        if isinstance(model, (tuple, list)) and len(model) == 2:
            lm, tok = model
            name = getattr(lm, "name_or_path", None) or getattr(lm.config, "_name_or_path", "") or type(lm).__name__
        elif isinstance(model, str) and model:
            lm, tok = load_lm(model, dtype=self.dtype, device=self.device)
            name = model
        else:
            raise ParameterError(f"scorer {self.name!r}: parameter model={model!r}: expected a model folder (or hub "
                                 "id) or a loaded (model, tokenizer) pair")
        set_scan(lm, self.scan)
        return lm, tok, str(name)

    def _check_model(self) -> None:
        from ..delta.adapters import ssm_input_families
        from ..lm.loading import model_facts

        self.facts = model_facts(self.lm)
        self.mixer = None
        if self.name in LAYERED:
            ids = self.facts["layer_ids"]
            if self.layer not in ids:
                raise ParameterError(f"scorer {self.name!r}: layer={self.layer} is not an SSM layer of "
                                     f"{self.model_name!r}; its SSM layers: {ids}")
            self.mixer = ids.index(self.layer)
        if self.name == "hidden_attention" and self.facts["mixer_family"] not in ssm_input_families():
            raise ParameterError(f"scorer 'hidden_attention' needs a Mamba-1 family model "
                                 f"({', '.join(ssm_input_families())}); {self.model_name!r} is "
                                 f"{self.facts['mixer_family']!r}")

    def settings(self) -> dict:
        s = {"scorer": self.name, "model": self.model_name, "architecture": self.facts["architecture"],
             "sign": self.sign, "order": self.policy.order, "query_chars": self.policy.query_chars,
             "max_tokens": self.policy.max_tokens, "dtype": self.facts["dtype"], "scan": self.scan}
        if self.name in LAYERED:
            s.update(layer=self.layer, statistic=self.statistic)
        if self.name == "hidden_attention":
            s["prefix_tokens"] = self.prefix_tokens
        return s

    def score(self, prompts: list[FilterPrompt], progress: bool = False) -> list[np.ndarray]:
        from ..extract.chunk_stats import chunk_lm_rows, chunk_rows
        from ..lm.forward import forward_all
        from ..lm.prompts import encode

        check_prompts(self.name, prompts)
        encs, owner = [], []  # every forward of the batch; owner: (prompt position, None | chunk left out)
        for k, p in enumerate(prompts):
            full = encode(self.tokenizer, p.sample(), self.policy)
            encs.append(full)
            owner.append((k, None))
            if self.name == "leave_one_out":
                for ci, r in enumerate(full.chunk_tokens):
                    if r is not None and r[1] > r[0]:
                        encs.append(encode(self.tokenizer, p.sample(), self.policy, drop=[*full.dropped, ci]))
                        owner.append((k, ci))
        capture = self.name in LAYERED
        with warnings.catch_warnings():  # a prompt without a target line has no target loss: NaN, not a warning
            warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
            warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
            results = forward_all(self.lm, encs, batch_tokens=self.batch_tokens, capture=capture,
                                  layers=[self.mixer] if capture else None,
                                  token_nll=self.name == "self_information",
                                  hidden_attention=self.prefix_tokens if self.name == "hidden_attention" else 0)
        full_of = {k: (encs[i], results[i]) for i, (k, ci) in enumerate(owner) if ci is None}
        without: dict[int, dict[int, float]] = {}
        for i, (k, ci) in enumerate(owner):
            if ci is not None:
                without.setdefault(k, {})[ci] = results[i].target_loss
        out = []
        for k, p in enumerate(prompts):
            enc, res = full_of[k]
            if self.name in LAYERED:
                rows = chunk_rows(p.id, enc, res.stats, [self.layer])
                if self.name == "delta":
                    column = self.statistic
                elif self.name == "decimation":
                    column = decimation_column(int(self.statistic) / 100)
                else:
                    column = f"ha_{self.statistic}"
                values = rows.sort_values("chunk_index")[column].to_numpy(float)
            elif self.name == "self_information":
                values = np.array([np.nan if r["self_information"] is None else r["self_information"]
                                   for r in chunk_lm_rows(enc, res.token_nll, res.target_loss, {})], float)
            else:  # leave-one-out: the loss without the chunk minus with all of them (positive: the chunk helps)
                gone = without.get(k, {})
                values = np.array([gone[ci] - res.target_loss if ci in gone else np.nan
                                   for ci in range(len(p.chunks))], float)
            out.append(self.sign * values)
        return out


def make_scorer(name: str, model=None, **options):
    """The scorer ``name`` (:data:`SCORERS`) with its options; an unknown option raises a ParameterError naming it."""
    check_choice("scorer", name, SCORERS)
    allowed = {"random": {"seed"}, "bm25": {"query_lines", "sign"}, "tfidf": {"query_lines", "sign"},
               "embedding": {"query_lines", "sign", "embedding_model", "device"}}
    if name in LM_SCORERS:
        lm_options = set(inspect.signature(LMScorer).parameters) - {"name", "model"}
        extra = sorted(set(options) - lm_options)
        if extra:
            raise ParameterError(f"scorer {name!r} takes no option(s) {extra}; its options: {sorted(lm_options)}")
        return LMScorer(name, model, **options)
    extra = sorted(set(options) - allowed[name])
    if extra:
        raise ParameterError(f"scorer {name!r} takes no option(s) {extra}; its options: {sorted(allowed[name])}")
    if model is not None and name != "embedding":
        raise ParameterError(f"scorer {name!r} uses no model (got model={model!r})")
    if name == "random":
        return RandomScorer(**options)
    if name == "embedding" and model is not None:
        options["embedding_model"] = model
    return TextScorer(name, **options)
