import json

import pytest
import torch

from deltalens.core.params import ParameterError
from deltalens.synthetic.models import ModelConfig, load_model
from deltalens.synthetic.tasks import make_task
from deltalens.synthetic.train import TrainConfig, evaluate, train


def _setup():
    task = make_task("induction_heads", seq_len=8, vocab_size=4)
    model_cfg = ModelConfig(vocab_size=task.vocab_size, d_model=16, n_layers=1, d_state=4)
    train_cfg = TrainConfig(batch_size=16, lr=1e-2, max_steps=60, eval_every=20, eval_batch_size=32, warmup_steps=5, decay_steps=60, threads=0)
    return task, model_cfg, train_cfg


def test_training_lowers_loss_and_checkpoint_is_reused(tmp_path):
    task, model_cfg, train_cfg = _setup()
    first = train(task, model_cfg, train_cfg, checkpoint_root=tmp_path, progress=False)
    assert not first.reused and first.steps == 60
    ev = first.curve.dropna(subset=["eval_loss"])
    assert list(ev.step) == [20, 40, 60]
    assert first.curve.train_loss.iloc[-10:].mean() < first.curve.train_loss.iloc[:10].mean()
    # the cap was hit long before 1e-4: the result says so plainly
    assert not first.reached_target and "did NOT reach the target loss" in first.summary()
    ckpt = first.checkpoint
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "curve.csv").is_file()
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["outcome"]["steps"] == 60 and meta["task"]["task"] == "induction_heads"
    assert not list(tmp_path.glob("*.tmp"))

    second = train(task, model_cfg, train_cfg, checkpoint_root=tmp_path, progress=False)
    assert second.reused and second.checkpoint == ckpt and "reused checkpoint" in second.summary()
    for (k, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), k
    batch = task.draw_batch(16, torch.Generator().manual_seed(5))
    assert evaluate(first.model, batch) == evaluate(load_model(ckpt), batch)


def test_same_seed_same_run(tmp_path):
    task, model_cfg, train_cfg = _setup()
    a = train(task, model_cfg, train_cfg, progress=False)
    b = train(task, model_cfg, train_cfg, progress=False)
    assert a.curve.train_loss.tolist() == b.curve.train_loss.tolist()


def test_reaches_target_and_stops_early():
    """A task the model solves fast: training stops at the first evaluation below the target."""
    task = make_task("selective_copying", seq_len=2, vocab_size=3, n_data=1)  # one data token value: trivial
    cfg = TrainConfig(batch_size=8, lr=3e-2, max_steps=2000, eval_every=10, eval_batch_size=16, warmup_steps=1, target_loss=1e-3, threads=0)
    r = train(task, ModelConfig(vocab_size=3, d_model=8, n_layers=1, d_state=2), cfg, progress=False)
    assert r.reached_target and r.final_eval_loss < 1e-3 and r.steps < 2000 and r.steps % 10 == 0


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"lr": "0.01"}, "train: parameter lr='0.01' has type str; allowed: a number"),
        ({"lr": 0}, "train: parameter lr=0 is out of range; allowed: > 0"),
        ({"batch_size": 0}, "train: parameter batch_size=0 is too small"),
        ({"max_steps": 10.5}, "train: parameter max_steps=10.5 has type float"),
    ],
)
def test_bad_train_parameters(kwargs, needle):
    with pytest.raises(ParameterError) as err:
        TrainConfig(**kwargs)
    assert needle in str(err.value)


def test_vocab_mismatch_is_caught_before_training(tmp_path):
    task, _, train_cfg = _setup()
    with pytest.raises(ParameterError, match="vocab_size=99 does not match task 'induction_heads'"):
        train(task, ModelConfig(vocab_size=99, d_model=8), train_cfg, checkpoint_root=tmp_path)
    assert not any(tmp_path.iterdir())
