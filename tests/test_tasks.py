import pytest
import torch

from deltalens.core.params import ParameterError
from deltalens.synthetic.tasks import IGNORE_INDEX, make_task

TINY = {
    "selective_copying": dict(seq_len=16, vocab_size=6, n_data=3),
    "induction_heads": dict(seq_len=16, vocab_size=6),
    "query_copying": dict(seq_len=12, n_classes=3, tokens_per_class=2, n_keep=2, n_distractors=3),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_shapes_masks_and_determinism(name):
    task = make_task(name, **TINY[name])
    a = task.draw_batch(64, torch.Generator().manual_seed(3))
    b = task.draw_batch(64, torch.Generator().manual_seed(3))
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.important, b.important)
    assert a.inputs.shape == (64, task.total_len)
    assert int(a.inputs.max()) < task.vocab_size and int(a.inputs.min()) >= 0
    # answers are scored exactly where targets are set; important tokens are context and data
    assert torch.equal(a.answer, a.targets != IGNORE_INDEX)
    assert not (a.important & ~a.context).any() and not (a.important & ~a.data).any()
    assert not (a.context & a.answer).any()
    assert a.important.any(dim=1).all()


def test_selective_copying_semantics(gen):
    task = make_task("selective_copying", **TINY["selective_copying"])
    batch = task.draw_batch(32, gen)
    A = task.vocab_size
    for row in range(32):
        x, imp = batch.inputs[row], batch.important[row]
        body = task.seq_len + task.n_data
        assert torch.equal(imp[:body], x[:body] != 0)  # important = the non-noise tokens
        assert (x[body:] == A - 1).all()  # markers
        assert torch.equal(batch.targets[row, body:], x[:body][x[:body] != 0])  # data tokens, in order


def test_induction_heads_semantics(gen):
    task = make_task("induction_heads", **TINY["induction_heads"])
    batch = task.draw_batch(32, gen)
    trigger = task.vocab_size - 1
    for row in range(32):
        x = batch.inputs[row]
        first = int((x == trigger).nonzero()[0])
        assert (x == trigger).sum() == 2 and x[-1] == trigger
        assert batch.important[row].nonzero().flatten().tolist() == [first + 1]
        assert batch.targets[row, -1] == x[first + 1]


def test_query_copying_semantics(gen):
    task = make_task("query_copying", **TINY["query_copying"])
    batch = task.draw_batch(64, gen)
    K, C = task.n_classes, task.tokens_per_class
    for row in range(64):
        x = batch.inputs[row]
        q = int(x[0]) - 2
        assert 0 <= q < K and not batch.context[row, 0]
        cls = (x - 2 - K).div(C, rounding_mode="floor")
        data = batch.data[row]
        assert int(data.sum()) == task.n_keep + task.n_distractors
        assert torch.equal(batch.important[row], data & (cls == q))
        assert torch.equal(batch.targets[row][batch.answer[row]], x[batch.important[row]])
        # the distractors are of other classes, so token identity alone cannot tell importance
        assert ((cls != q) & data).sum() == task.n_distractors


def test_length_can_change_for_generalisation():
    task = make_task("induction_heads", seq_len=16, vocab_size=6)
    assert task.with_seq_len(64).draw_batch(2, torch.Generator().manual_seed(0)).inputs.shape == (2, 64)


@pytest.mark.parametrize(
    "name,params,needle",
    [
        ("copying", {}, "task='copying' is unknown; allowed: ['induction_heads', 'query_copying', 'selective_copying']"),
        ("selective_copying", {"vocab_size": 2}, "vocab_size=2 is too small; allowed: >= 3"),
        ("induction_heads", {"vocab_size": 2}, "vocab_size=2 is too small"),
        ("query_copying", {"n_classes": 1}, "n_classes=1 is too small"),
        ("selective_copying", {"seq_len": 4, "n_data": 8}, "n_data=8 data tokens for seq_len=4"),
        ("query_copying", {"seq_len": 4, "n_keep": 3, "n_distractors": 3}, "n_keep + n_distractors = 6"),
        ("selective_copying", {"seq_len": "64"}, "seq_len='64' has type str; allowed: an integer"),
        ("induction_heads", {"seq_len": 64.0}, "seq_len=64.0 has type float"),
        ("induction_heads", {"lenght": 5}, "unknown parameter(s) ['lenght']"),
    ],
)
def test_bad_parameters_name_the_parameter(name, params, needle):
    with pytest.raises(ParameterError) as err:
        make_task(name, **params)
    assert needle in str(err.value)
