"""Byte-level BPE tokenizer of the local code LM, trained with the ``tokenizers`` library.

GPT-2 style: bytes mapped to printable characters, the GPT-2 split regex, no normaliser, no added BOS/EOS (a
prompt's tokens are exactly its text's tokens, so character offsets map cleanly). Every byte is in the initial
alphabet, so any text round-trips. Training is deterministic for a given list of texts.

Saved as a transformers ``PreTrainedTokenizerFast`` (``save_pretrained`` into the model directory); loading it
back with ``AutoTokenizer.from_pretrained`` gives ``return_offsets_mapping=True`` character spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..core.params import ParameterError, check_int

EOS = "<|endoftext|>"
PAD = "<|pad|>"


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int = 8192
    min_frequency: int = 2
    special_tokens: tuple[str, ...] = (EOS, PAD)  # the first is the document separator / EOS / BOS
    max_token_length: int = 24  # longest merged token, in characters

    def __post_init__(self) -> None:
        where = "tokenizer"
        check_int("vocab_size", self.vocab_size, minimum=256 + len(self.special_tokens) + 1, where=where)
        check_int("min_frequency", self.min_frequency, minimum=1, where=where)
        check_int("max_token_length", self.max_token_length, minimum=1, where=where)
        sp = self.special_tokens
        if not isinstance(sp, (list, tuple)) or not sp or not all(isinstance(s, str) and s for s in sp) \
                or len(set(sp)) != len(sp):
            raise ParameterError(f"{where}: parameter special_tokens={sp!r}; allowed: a non-empty list of distinct "
                                 "strings (the first is end-of-text)")
        object.__setattr__(self, "special_tokens", tuple(sp))

    @property
    def eos(self) -> str:
        return self.special_tokens[0]

    @property
    def pad(self) -> str:
        return self.special_tokens[1] if len(self.special_tokens) > 1 else self.special_tokens[0]


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(cfg.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=cfg.max_token_length,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return wrap(tok, cfg)


def wrap(tok: Tokenizer, cfg: TokenizerConfig) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=cfg.eos,
        bos_token=cfg.eos,
        unk_token=None,
        pad_token=cfg.pad,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )


def encode_documents(tokenizer: PreTrainedTokenizerFast, texts: list[str], batch: int = 256) -> list[list[int]]:
    """Token ids of every text (no special tokens added), with the Rust tokenizer's batch encoder."""
    backend: Tokenizer = tokenizer.backend_tokenizer
    out: list[list[int]] = []
    for s in range(0, len(texts), batch):
        out += [e.ids for e in backend.encode_batch(texts[s:s + batch], add_special_tokens=False)]
    return out
