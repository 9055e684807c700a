"""percent_removed: the protocol's metric, on cases small enough to compute by hand."""

from __future__ import annotations

import numpy as np
import pytest

from hpo.task.metric import percent_removed


def test_half_of_the_noise_removed() -> None:
    clean = np.zeros(2)
    noisy = np.array([1.0, -1.0])  # sum|clean - noisy| = 2
    output = np.array([0.5, -0.5])  # sum|clean - output| = 1
    assert percent_removed(clean, noisy, output) == pytest.approx(50.0)


def test_perfect_output_scores_100_and_identity_scores_0() -> None:
    clean = np.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5]])
    noisy = clean + np.array([[0.1, -0.2, 0.3], [0.0, 0.4, -0.1]])
    assert percent_removed(clean, noisy, clean) == pytest.approx(100.0)
    assert percent_removed(clean, noisy, noisy) == pytest.approx(0.0)


def test_error_uses_absolute_values_not_squares() -> None:
    clean = np.zeros(4)
    noisy = np.ones(4)  # noise 4
    output = np.array([2.0, 0.0, 0.0, 0.0])  # |error| 2 -> 50 %; a squared error would give 0 %
    assert percent_removed(clean, noisy, output) == pytest.approx(50.0)


def test_errors_of_opposite_sign_do_not_cancel() -> None:
    clean = np.zeros(2)
    noisy = np.array([1.0, -1.0])
    output = np.array([-0.5, 0.5])  # overshoots on the other side: |error| is still 1
    assert percent_removed(clean, noisy, output) == pytest.approx(50.0)


def test_sums_pool_all_curves_instead_of_averaging_per_curve() -> None:
    clean = np.zeros((2, 2))
    noisy = np.array([[1.0, 1.0], [3.0, 3.0]])  # noise 2 + 6 = 8
    output = np.array([[0.0, 0.0], [3.0, 3.0]])  # error 0 + 6 = 6
    # Pooled: 100 * (1 - 6/8) = 25; the mean of the per-curve scores (100 and 0) would be 50.
    assert percent_removed(clean, noisy, output) == pytest.approx(25.0)


def test_worse_than_the_noise_is_floored_at_zero() -> None:
    clean = np.zeros(3)
    noisy = np.full(3, 0.1)
    output = np.full(3, 5.0)
    assert percent_removed(clean, noisy, output) == 0.0


def test_just_better_than_the_noise_is_small_and_positive() -> None:
    clean = np.zeros(2)
    noisy = np.array([1.0, 1.0])
    output = np.array([0.99, 1.0])
    assert percent_removed(clean, noisy, output) == pytest.approx(0.5)


def test_zero_noise_scores_100_if_perfect_else_0() -> None:
    clean = np.array([[1.0, 2.0, 3.0]])
    assert percent_removed(clean, clean.copy(), clean.copy()) == 100.0
    assert percent_removed(clean, clean.copy(), clean + 1e-3) == 0.0


def test_returns_a_python_float_and_mixes_dtypes() -> None:
    value = percent_removed(
        np.zeros(2, dtype=np.int64),
        np.array([1.0, -1.0], dtype=np.float64),
        np.array([0.5, -0.5], dtype=np.float32),
    )
    assert type(value) is float
    assert value == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("clean_shape", "noisy_shape", "output_shape"),
    [
        ((2, 3), (2, 3), (2, 4)),
        ((2, 3), (3, 2), (2, 3)),  # same size, different shape
        ((6,), (2, 3), (2, 3)),
        ((2, 3, 1), (2, 3), (2, 3)),
    ],
)
def test_shape_mismatch_raises(clean_shape, noisy_shape, output_shape) -> None:
    with pytest.raises(ValueError, match="shape"):
        percent_removed(np.zeros(clean_shape), np.ones(noisy_shape), np.zeros(output_shape))
