"""The identifier-recall curriculum (``codelm/recall.py``, ``codelm/curriculum.py``): renames are consistent across
chunk, prefix and target line, AST-safe (never keywords, builtins, attributes of other objects or keyword arguments),
the renamed code still parses; the synthetic copy sequences hold what they claim; the sampler is deterministic."""

from __future__ import annotations

import ast
import random
import tokenize

import pytest
import torch

from deltalens.codelm.curriculum import CurriculumConfig, CurriculumSampler
from deltalens.codelm.recall import RESERVED, fresh_name, identifier_pairs, rename_sample, rename_text, repeated_span
from deltalens.core.params import ParameterError

CHUNK = '''def load_config(path, strict=False):
    """Read the config file at path."""
    data = open(path).read()
    return parse(data, strict=strict)
'''
PREFIX = '''from .config import load_config
from . import util

def main(argv):
    # load_config is called below
    opts = util.parse_args(argv)
'''
TARGET = "    cfg = load_config(opts.path, load_config=1) or util.load_config(x).load_config"


def sample(target=TARGET, prefix=PREFIX, chunk=CHUNK, used=("load_config",)):
    return {"sample_id": "p:a.py:L5", "prefix": prefix, "target": target, "suffix": "",
            "used_names": list(used),
            "chunks": [{"chunk_index": 0, "category": "relevant", "text": chunk, "path": "config.py",
                        "defines": list(used)},
                       {"chunk_index": 1, "category": "distractor", "text": "def other():\n    return load_config\n",
                        "path": "o.py", "defines": []}]}


def test_a_name_is_renamed_consistently_everywhere_and_only_where_it_is_that_name():
    r = rename_sample(sample(), random.Random(0))
    new = r.mapping["load_config"]
    assert new != "load_config" and new.isidentifier() and new not in RESERVED
    s = r.sample
    # the definition, the import of the prefix and the bare call of the target line are renamed
    assert s["chunks"][0]["text"].startswith(f"def {new}(path, strict=False):")
    assert f"from .config import {new}\n" in s["prefix"]
    assert s["target"].startswith(f"    cfg = {new}(opts.path,")
    # never a keyword argument, nor an attribute of another object, nor a comment or a string
    assert "load_config=1" in s["target"] and s["target"].endswith(".load_config")
    assert "util.load_config(x)" in s["target"]
    assert "# load_config is called below" in s["prefix"]
    assert '"""Read the config file at path."""' in s["chunks"][0]["text"]
    # the other chunk uses the name bare: renamed too (the prompt stays consistent)
    assert s["chunks"][1]["text"] == f"def other():\n    return {new}\n"
    assert s["chunks"][0]["defines"] == [new] and s["used_names"] == [new]
    assert r.renamed_tokens == 1


def test_a_module_attribute_is_renamed_when_the_line_uses_it_through_that_module():
    s = sample(target="    return util.helper(x) + other.helper", prefix="from . import util\n",
               chunk="def helper(x):\n    return x\n", used=("util.helper",))
    r = rename_sample(s, random.Random(1))
    new = r.mapping["helper"]
    assert r.sample["target"] == f"    return util.{new}(x) + other.helper"
    assert r.sample["chunks"][0]["text"].startswith(f"def {new}(x):")  # the definition itself is bare


@pytest.mark.parametrize("name", ["print", "len", "self", "x", "__init__", "match"])
def test_builtins_keywords_dunders_and_one_letter_names_are_never_renamed(name):
    s = sample(target=f"    y = {name}(a)", prefix="", chunk=f"def {name}(a):\n    return a\n", used=(name,))
    if name == "self":  # not reserved: a plain identifier
        assert rename_sample(s, random.Random(0)) is not None
    else:
        assert rename_sample(s, random.Random(0)) is None


def test_fragments_cut_inside_docstrings_or_indentation_still_rename_their_code():
    chunk = 'class Parser:\n    """A parser.\n\n    It reads'   # cut inside the docstring
    prefix = '    Returns the thing.\n    """\n    return Parser()\n\n  def g():\n'  # starts inside one, odd dedent
    s = sample(target="        p = Parser()", prefix=prefix, chunk=chunk, used=("Parser",))
    r = rename_sample(s, random.Random(2))
    new = r.mapping["Parser"]
    assert new[0].isupper() and "_" not in new  # the case style of a class
    assert r.sample["chunks"][0]["text"].startswith(f"class {new}:")
    assert f"return {new}()" in r.sample["prefix"] and "Returns the thing." in r.sample["prefix"]


def _names(text):
    try:
        return [(t.start, t.string) for t in tokenize.generate_tokens(iter(text.splitlines(True)).__next__)
                if t.type == tokenize.NAME]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None


def test_renamed_code_parses_wherever_the_original_parsed(ds):
    """Over every sample the project's builder made (the smoke dataset): most samples are renamed; every chunk,
    prefix and target that parsed (or tokenized) before still does, with the same NAME tokens at the same places but
    the renamed ones, each renamed the same way everywhere in the sample."""
    renamed = 0
    for i in range(len(ds)):
        s = ds.sample(i)
        r = rename_sample(s, random.Random(i))
        if r is None:
            continue
        renamed += 1
        assert r.renamed_tokens >= 1
        pairs = [(s["target"], r.sample["target"]), (s["prefix"], r.sample["prefix"])] + [
            (c["text"], d["text"]) for c, d in zip(s["chunks"], r.sample["chunks"])]
        for before, after in pairs:
            try:
                ast.parse(before)
            except SyntaxError:
                pass
            else:
                ast.parse(after)
            old, new = _names(before), _names(after)
            if old is None:
                continue
            assert [p for p, _ in old] == [p for p, _ in new] or len(old) == len(new)
            for (_, a), (_, b) in zip(old, new):
                assert a == b or r.mapping.get(a) == b, (s["sample_id"], a, b)
        # the target line's renamed name appears in a relevant chunk: it can be copied from there
        rel = "".join(c["text"] for c in r.sample["chunks"] if c["category"] == "relevant")
        assert any(new in rel for new in r.mapping.values() if new in r.sample["target"])
    assert renamed >= len(ds) // 2, (renamed, len(ds))


def test_fresh_names_follow_the_case_style_and_never_collide():
    rng, taken = random.Random(0), {"a"}
    names = [fresh_name(n, rng, taken) for n in ["snake_name", "CamelName", "UPPER_NAME", "_private"] * 20]
    assert len(set(names)) == len(names)
    assert all(n.islower() or "_" in n for n in names[0::4])
    assert all(n[0].isupper() and not n.isupper() for n in names[1::4])
    assert all(n.isupper() for n in names[2::4])
    assert all(n.startswith("_") for n in names[3::4])


def test_rename_text_refuses_what_tokenize_cannot_read():
    from deltalens.codelm.recall import RenameError

    with pytest.raises(RenameError):
        rename_text("x = 'unterminated\n", {"x": "y"}, {})


def test_repeated_span_repeats_the_span_at_the_distance():
    stream = torch.arange(10_000)
    seq, a, b = repeated_span(stream, 16, 100, 512, torch.Generator().manual_seed(0))
    assert seq.numel() == 513 and b - a == 16
    assert torch.equal(seq[a:b], seq[a - 16 - 100:a - 100])


def test_identifier_pairs_query_values_defined_above():
    text, spans = identifier_pairs(8, 4, random.Random(0))
    defs = dict(line.split(" = ") for line in text.split("\n\n")[0].splitlines())
    for (s, e), line in zip(spans, text.split("\n\n")[1].splitlines()):
        key = line.split()[1]
        assert text[s:e] == defs[key]
    ast.parse(text)


@pytest.mark.parametrize("bad, match", [
    ({"spans": [0.6, 0.2], "pairs": [0.5, 0.0]}, "spans \\+ pairs \\+ random_spans = 1.1"),
    ({"spans": [0.3, 0.2], "random_spans": [0.8, 0.0]}, "random_spans = 1.1 at the first step"),
    ({"random_span_lengths": []}, "random_span_lengths"),
    ({"renamed": [0.5]}, "renamed=\\[0.5\\]"),
    ({"span_lengths": []}, "span_lengths"),
    ({"pairs_range": [9, 3]}, "min <= max"),
])
def test_bad_curriculum_parameters_are_named(bad, match):
    with pytest.raises(ParameterError, match=match):
        CurriculumConfig(**bad)


def test_the_sampler_is_deterministic_and_scores_the_right_positions():
    cfg = CurriculumConfig(spans=(0.5, 0.5), pairs=(0.2, 0.2))

    class Tok:  # a character tokenizer with offsets
        def __call__(self, text, return_offsets_mapping=True, add_special_tokens=False):
            return {"input_ids": [ord(c) % 97 for c in text], "offset_mapping": [(i, i + 1) for i in range(len(text))]}

    def run():
        s = CurriculumSampler(cfg, torch.arange(5000) % 97, [], Tok(), 0.0, 128, 0, "all",
                              torch.Generator().manual_seed(3))
        return [s.draw(i / 20) for i in range(20)], s.counts

    (a, ca), (b, cb) = run(), run()
    assert ca == cb and set(ca) == {"span", "pairs", "plain"}
    for x, y in zip(a, b):
        assert torch.equal(x.tokens, y.tokens) and (x.start, x.end, x.kind) == (y.start, y.end, y.kind)
        assert 0 <= x.start < x.end <= x.tokens.numel() <= 129
        if x.kind == "span":  # the scored repeat occurred before
            n = x.end - x.start
            text = x.tokens.tolist()
            assert any(text[i:i + n] == text[x.start:x.end] for i in range(x.start - n + 1))


def test_random_spans_repeat_random_tokens_and_leave_old_keys_alone():
    stream = torch.arange(5000) % 97 + 2  # "code": ids 2..98
    ids = torch.arange(200, 300)          # the vocabulary a random span is drawn from
    seq, a, b = repeated_span(stream, 32, 50, 256, torch.Generator().manual_seed(1), ids)
    assert torch.equal(seq[a:b], seq[a - 32 - 50:a - 50])
    assert bool(((seq[a:b] >= 200) & (seq[a:b] < 300)).all())  # the span is random ids, the rest is code
    assert int(((seq >= 200) & (seq < 300)).sum()) == 64
    # a curriculum without random spans keeps the key (content) it had before they existed
    old = CurriculumConfig(spans=(0.2, 0.1))
    assert "random_spans" not in old.content() and "random_span_lengths" not in old.content()
    assert CurriculumConfig(random_spans=(0.5, 0.1)).content()["random_span_lengths"] == [32, 64, 128, 256]


def test_the_sampler_draws_random_spans_scored_on_their_repeat():
    cfg = CurriculumConfig(random_spans=(0.9, 0.9), random_span_lengths=(16,))

    class Tok:
        all_special_ids = (0, 1)

        def __len__(self):
            return 400

    s = CurriculumSampler(cfg, torch.arange(5000) % 97 + 2, [], Tok(), 0.0, 128, 0, "all",
                          torch.Generator().manual_seed(0))
    drawn = [s.draw(0.5) for _ in range(30)]
    assert s.counts["random_span"] >= 20
    for x in drawn:
        if x.kind == "random_span":
            rep = x.tokens[x.start:x.end].tolist()
            assert x.end - x.start == 16 and all(1 < t < 400 for t in rep)
            text = x.tokens.tolist()
            assert any(text[i:i + 16] == rep for i in range(x.start - 16 + 1))


def test_each_curriculum_sequence_s_loss_is_recorded_under_its_kind():
    """The training curve's per-kind loss (train_loss_by_kind): the repeat loss of random spans, step by step, is when
    copying is learned; it must be each sequence's own scored loss, and the batch loss their mean."""
    import torch.nn.functional as F

    from deltalens.codelm.curriculum import Scored
    from deltalens.codelm.train import accumulate_gradients

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50))
    seqs = [torch.randint(0, 50, (20,)) for _ in range(3)]
    batch = [Scored(seqs[0], 5, 12, "random_span"), Scored(seqs[1], 0, 20, "plain"), Scored(seqs[2], 8, 16, "random_span")]
    by_kind: dict = {}
    loss = float(accumulate_gradients(model, batch, 1, by_kind))
    own = [float(F.cross_entropy(model(s.tokens[None, :s.end - 1])[0, max(s.start, 1) - 1:s.end - 1],
                                 s.tokens[max(s.start, 1):s.end])) for s in batch]
    assert by_kind["random_span"] == pytest.approx([own[0], own[2]]) and by_kind["plain"] == pytest.approx([own[1]])
    assert loss == pytest.approx(sum(own) / 3)


def test_equal_length_sequences_share_a_forward_without_changing_the_loss_or_gradient():
    """micro_batch_size > 1 stacks curriculum sequences of one length into one forward: each keeps the loss (and the
    gradient) it has alone — also for a causal model whose logits mix positions."""
    from deltalens.codelm.curriculum import Scored
    from deltalens.codelm.train import accumulate_gradients

    class Causal(torch.nn.Module):  # position t sees the running mean of embeddings 0..t
        def __init__(self):
            super().__init__()
            self.emb, self.head = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50)

        def forward(self, x):
            h = self.emb(x).cumsum(1) / torch.arange(1, x.shape[1] + 1)[None, :, None]
            return self.head(h)

    torch.manual_seed(0)
    model = Causal()
    batch = [Scored(torch.randint(0, 50, (n,)), a, b, k) for n, a, b, k in
             [(20, 5, 12, "random_span"), (20, 0, 20, "plain"), (9, 2, 9, "prompt"), (20, 8, 16, "random_span"),
              (9, 0, 7, "prompt")]]
    runs = []
    for micro in (1, 2, 5):
        model.zero_grad(set_to_none=True)
        by_kind: dict = {}
        loss = float(accumulate_gradients(model, batch, micro, by_kind))
        runs.append((loss, [p.grad.clone() for p in model.parameters()], by_kind))
    for loss, grads, by_kind in runs[1:]:
        assert loss == pytest.approx(runs[0][0], rel=1e-5)
        assert all(torch.allclose(g, g0, atol=1e-6) for g, g0 in zip(grads, runs[0][1]))
        assert by_kind.keys() == runs[0][2].keys()
        assert all(sorted(by_kind[k]) == pytest.approx(sorted(runs[0][2][k]), rel=1e-5) for k in by_kind)
