"""The training loop: reproducible, observable through its callback, and safe when it diverges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpo.task.config import ConfigValueError, TrainConfig
from hpo.task.curves import DataConfig, Split, epoch_train_split, make_split
from hpo.task.fit import train_and_test
from hpo.task.train import EpochReport, TrainResult, evaluate, predict, train

TINY = TrainConfig(hidden_size=8, shift=2, epochs=4)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_defaults_are_the_protocol() -> None:
    cfg = TrainConfig()
    assert (cfg.hidden_size, cfg.shift, cfg.epochs) == (40, 10, 100)
    assert (cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.grad_clip) == (0.01, 10, 0.0, 0.0)


# --- determinism -------------------------------------------------------------------------------


def test_same_seeds_give_identical_weights_and_scores(tiny_splits: tuple[Split, Split]) -> None:
    tr, va = tiny_splits
    a, b = train(TINY, tr, va), train(TINY, tr, va)
    assert same_weights(a.model, b.model)
    assert a.loss_curve == b.loss_curve
    assert a.val_curve == b.val_curve
    assert a.val_removed == b.val_removed
    np.testing.assert_array_equal(predict(a.model, va.noisy), predict(b.model, va.noisy))


def test_a_different_weight_seed_gives_a_different_model(tiny_splits: tuple[Split, Split]) -> None:
    tr, va = tiny_splits
    a = train(TINY, tr, va)
    c = train(TrainConfig(hidden_size=8, shift=2, epochs=4, seed=1), tr, va)
    assert not same_weights(a.model, c.model)
    assert a.loss_curve != c.loss_curve
    assert not np.array_equal(predict(a.model, va.noisy), predict(c.model, va.noisy))


def test_training_does_not_depend_on_the_global_random_state(
    tiny_splits: tuple[Split, Split],
) -> None:
    tr, va = tiny_splits
    a = train(TINY, tr, va)
    torch.manual_seed(12345)
    np.random.seed(54321)
    torch.rand(100)
    b = train(TINY, tr, va)
    assert same_weights(a.model, b.model)


def test_training_does_not_modify_its_data(tiny_splits: tuple[Split, Split]) -> None:
    tr, va = tiny_splits
    before = [a.copy() for a in (tr.clean, tr.noisy, va.clean, va.noisy)]
    train(TINY, tr, va)
    for old, new in zip(before, (tr.clean, tr.noisy, va.clean, va.noisy), strict=True):
        np.testing.assert_array_equal(old, new)


# --- the epoch callback ------------------------------------------------------------------------


def test_callback_sees_every_epoch_with_its_scores(tiny_splits: tuple[Split, Split]) -> None:
    tr, va = tiny_splits
    reports: list[EpochReport] = []
    result = train(TINY, tr, va, on_epoch=reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    assert [r.val_removed for r in reports] == result.val_curve
    assert [r.train_loss for r in reports] == result.loss_curve
    assert all(math.isfinite(r.train_loss) and r.train_loss > 0 for r in reports)
    assert all(0.0 <= r.val_removed <= 100.0 for r in reports)
    assert result.status == "completed"
    assert result.epochs_run == 4
    assert result.val_removed == result.val_curve[-1]


def test_callback_returning_true_stops_the_run(tiny_splits: tuple[Split, Split]) -> None:
    tr, va = tiny_splits
    seen: list[int] = []

    def stop_at_two(r: EpochReport) -> bool:
        seen.append(r.epoch)
        return r.epoch == 2

    result = train(TINY, tr, va, on_epoch=stop_at_two)
    assert seen == [1, 2]
    assert result.status == "stopped"
    assert result.reason
    assert result.epochs_run == 2
    assert len(result.val_curve) == len(result.loss_curve) == 2
    assert result.val_removed == result.val_curve[-1]
    # The first two epochs are those of an uninterrupted run with the same seeds.
    full = train(TINY, tr, va)
    assert result.loss_curve == full.loss_curve[:2]


def test_callback_returning_false_or_none_does_not_stop(tiny_splits: tuple[Split, Split]) -> None:
    tr, va = tiny_splits
    assert train(TINY, tr, va, on_epoch=lambda r: False).epochs_run == 4
    assert train(TINY, tr, va, on_epoch=lambda r: None).status == "completed"


def test_callback_exception_propagates(tiny_splits: tuple[Split, Split]) -> None:
    tr, va = tiny_splits

    class Pruned(Exception):
        pass

    calls: list[int] = []

    def prune_at_two(r: EpochReport) -> None:
        calls.append(r.epoch)
        if r.epoch == 2:
            raise Pruned("pruned at 2")

    with pytest.raises(Pruned, match="pruned at 2"):
        train(TINY, tr, va, on_epoch=prune_at_two)
    assert calls == [1, 2]


# --- divergence --------------------------------------------------------------------------------


def test_an_infinite_learning_rate_is_refused_when_the_config_is_built() -> None:
    with pytest.raises(ConfigValueError, match="lr: must be finite"):
        TrainConfig(lr=math.inf)


@pytest.mark.parametrize("lr", [1e20, 1e30, 1e300])
def test_huge_learning_rate_diverges_without_raising(
    tiny_splits: tuple[Split, Split], lr: float
) -> None:
    tr, va = tiny_splits
    reports: list[EpochReport] = []
    result = train(TrainConfig(hidden_size=8, shift=2, epochs=5, lr=lr), tr, va, reports.append)
    assert result.status == "diverged"
    assert result.reason
    assert 1 <= result.epochs_run < 5
    assert not math.isfinite(result.loss_curve[-1])
    assert isinstance(result.model, torch.nn.Module)
    # The callback only ever sees finite epochs.
    assert all(math.isfinite(r.train_loss) for r in reports)


def test_learning_rate_near_float32_max_diverges_without_raising(
    tiny_splits: tuple[Split, Split],
) -> None:
    tr, va = tiny_splits
    result = train(TrainConfig(hidden_size=8, shift=2, epochs=3, lr=1e38), tr, va)
    assert result.status == "diverged"


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_training_input_diverges_without_raising(
    tiny_splits: tuple[Split, Split], bad: float
) -> None:
    tr, va = tiny_splits
    noisy = tr.noisy.copy()
    noisy[3, 40] = bad
    result = train(TINY, Split(tr.clean, noisy, tr.n_sines), va)
    assert result.status == "diverged"
    assert result.reason
    assert result.epochs_run == 1


def test_a_diverged_run_scores_zero_on_the_held_out_split() -> None:
    data = DataConfig(n_train=20, n_val=10, n_test=10)
    result, test = train_and_test(TrainConfig(hidden_size=8, shift=2, epochs=3, lr=1e30), data)
    assert result.status == "diverged"
    assert test == 0.0


# --- learning ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_run() -> tuple[TrainResult, float, DataConfig]:
    data = DataConfig(seed=0, n_train=100, n_val=20, n_test=50)
    result, test = train_and_test(TrainConfig(hidden_size=16, shift=3, epochs=15), data)
    return result, test, data


def test_a_short_run_improves_over_its_first_epoch(
    short_run: tuple[TrainResult, float, DataConfig],
) -> None:
    result, _, _ = short_run
    assert result.status == "completed"
    assert result.epochs_run == 15
    assert result.loss_curve[-1] < result.loss_curve[0] / 5
    assert result.val_curve[-1] > result.val_curve[0] + 10
    assert result.seconds > 0


def test_reported_scores_are_those_of_the_returned_model(
    short_run: tuple[TrainResult, float, DataConfig],
) -> None:
    result, test, data = short_run
    assert evaluate(result.model, make_split(data, "val")) == pytest.approx(result.val_removed)
    assert evaluate(result.model, make_split(data, "test")) == pytest.approx(test)
    assert test > 10  # it learned something that carries over to unseen curves


def test_predict_handles_batches_and_leaves_the_mode_alone(
    short_run: tuple[TrainResult, float, DataConfig],
) -> None:
    result, _, data = short_run
    noisy = make_split(data, "test").noisy
    model = result.model.train()
    whole = predict(model, noisy)
    assert whole.shape == noisy.shape
    assert model.training
    np.testing.assert_allclose(predict(model, noisy, batch=7), whole, rtol=1e-5, atol=1e-6)
    assert predict(model, noisy[:0]).shape == (0, noisy.shape[1])


def test_fresh_curves_train_on_each_epochs_own_set_and_replay_exactly() -> None:
    data = DataConfig(seed=1, n_train=20, n_val=10, n_test=10, fresh=True)
    cfg = TrainConfig(hidden_size=8, shift=2, epochs=4, batch_size=10, seed=0)
    asked: list[int] = []

    def fresh(epoch: int) -> Split:
        asked.append(epoch)
        return epoch_train_split(data, epoch)

    tr, va = make_split(data, "train"), make_split(data, "val")
    a = train(cfg, tr, va, fresh=fresh)
    assert asked == [2, 3, 4]  # epoch 1 trains on the train split itself
    b = train(cfg, tr, va, fresh=fresh)
    assert a.loss_curve == b.loss_curve and same_weights(a.model, b.model)
    fixed = train(cfg, tr, va)
    assert fixed.loss_curve[0] == a.loss_curve[0]  # the same first epoch
    assert fixed.loss_curve[1:] != a.loss_curve[1:]  # then other curves
