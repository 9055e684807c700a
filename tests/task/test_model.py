"""Denoiser: output shape, and what the look-ahead shift lets each output step see."""

from __future__ import annotations

import pytest
import torch

from hpo.task.model import Denoiser

LENGTH = 80


def make_model(hidden: int, shift: int, seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    return Denoiser(hidden, shift).double().eval()


@pytest.mark.parametrize("shift", [0, 1, 3, 10, 79, 100])
@pytest.mark.parametrize(("batch", "length"), [(1, LENGTH), (4, LENGTH), (3, 7)])
def test_output_shape_equals_input_shape(shift: int, batch: int, length: int) -> None:
    torch.manual_seed(1)
    model = Denoiser(hidden_size=5, shift=shift)
    x = torch.randn(batch, length, 1)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (batch, length, 1)
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()


def test_attributes_and_parameter_count() -> None:
    model = Denoiser(hidden_size=7, shift=4)
    assert (model.hidden_size, model.shift) == (7, 4)
    h = 7
    # LSTM(1->H) + LSTM(H->H) + Linear(H->1); each LSTM has 4 gates with two biases.
    expected = 4 * h * (1 + h + 2) + 4 * h * (h + h + 2) + (h + 1)
    assert model.n_params() == expected
    assert model.n_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("hidden", "shift"), [(0, 3), (-1, 3), (4, -1)])
def test_invalid_sizes_are_rejected(hidden: int, shift: int) -> None:
    with pytest.raises(ValueError):
        Denoiser(hidden, shift)


def _outputs(model: Denoiser, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)[0, :, 0]


@pytest.mark.parametrize("shift", [0, 1, 4, 10])
@pytest.mark.parametrize("t", [0, 20, 50])
def test_output_at_t_ignores_inputs_after_t_plus_shift(shift: int, t: int) -> None:
    model = make_model(hidden=6, shift=shift)
    gen = torch.Generator().manual_seed(t * 100 + shift)
    x = torch.randn(1, LENGTH, 1, generator=gen, dtype=torch.float64)
    base = _outputs(model, x)
    first_unseen = t + shift + 1
    assert first_unseen < LENGTH  # the cases above must leave something to perturb
    perturbed = x.clone()
    perturbed[0, first_unseen:, 0] += 3.0 * torch.randn(
        LENGTH - first_unseen, generator=gen, dtype=torch.float64
    )
    out = _outputs(model, perturbed)
    # Every step up to t has seen only unchanged inputs; the later steps must react.
    torch.testing.assert_close(out[: t + 1], base[: t + 1], rtol=0, atol=1e-12)
    assert (out[t + 1 :] - base[t + 1 :]).abs().max() > 1e-6


@pytest.mark.parametrize("shift", [0, 1, 4, 10])
@pytest.mark.parametrize("t", [5, 20, 50])
@pytest.mark.parametrize("back", [0, 1, 3])
def test_output_at_t_sees_inputs_up_to_t_plus_shift(shift: int, t: int, back: int) -> None:
    model = make_model(hidden=6, shift=shift)
    gen = torch.Generator().manual_seed(t * 100 + shift)
    x = torch.randn(1, LENGTH, 1, generator=gen, dtype=torch.float64)
    base = _outputs(model, x)
    j = t + shift - back  # an input at or before t + shift
    perturbed = x.clone()
    perturbed[0, j, 0] += 1.0
    out = _outputs(model, perturbed)
    assert abs(out[t] - base[t]) > 1e-9
    # ...and nothing before the step that first sees input j changes.
    first_seeing = max(j - shift, 0)
    torch.testing.assert_close(out[:first_seeing], base[:first_seeing], rtol=0, atol=1e-12)


def test_last_steps_see_the_end_of_the_signal_through_the_padding() -> None:
    # With the shift reaching past the end, the last outputs still depend on the last input.
    model = make_model(hidden=6, shift=10)
    x = torch.randn(1, LENGTH, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    perturbed = x.clone()
    perturbed[0, -1, 0] += 1.0
    diff = (_outputs(model, perturbed) - _outputs(model, x)).abs()
    assert (diff[LENGTH - 11 :] > 1e-9).all()
    assert (diff[: LENGTH - 11] <= 1e-12).all()


def test_curves_in_a_batch_are_independent() -> None:
    model = make_model(hidden=6, shift=3)
    x = torch.randn(4, LENGTH, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-12)


def test_same_seed_same_weights_different_seed_different_weights() -> None:
    a, b, c = make_model(8, 2, seed=5), make_model(8, 2, seed=5), make_model(8, 2, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
