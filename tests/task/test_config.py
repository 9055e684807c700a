"""hpo.task.config (and DataConfig, which shares check_fields): typed settings checked when built.

Each field's bounds (the lowest value allowed or not, the highest), integers refusing floats and
bools, numbers refusing strings and non-finite values, the device names, and ConfigValueError
carrying the field's name.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from hpo.task.config import ConfigValueError, TrainConfig, check_fields
from hpo.task.curves import DataConfig

CONFIGS: list[type[Any]] = [TrainConfig, DataConfig]


def _int_fields(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.type in ("int", int)]


def _rule_cases() -> list[tuple[type[Any], str]]:
    return [(cls, name) for cls in CONFIGS for name in cls.RULES]


def _refused(cls: type[Any], name: str, value: Any) -> ConfigValueError:
    with pytest.raises(ConfigValueError) as info:
        cls(**{name: value})
    assert info.value.field == name
    assert str(info.value).startswith(f"{name}: ")
    assert "\n" not in str(info.value)
    return info.value


def _below(lo: float, is_int: bool) -> float:
    return lo - 1 if is_int else lo - max(1e-9, abs(lo) * 1e-6)


def _above(hi: float, is_int: bool) -> float:
    return hi + 1 if is_int else hi * 2


def test_defaults_are_valid() -> None:
    assert TrainConfig() == TrainConfig(hidden_size=40, shift=10, epochs=100, lr=0.01,
                                        batch_size=10, seed=0, threads=1, device="auto")
    assert DataConfig().count("train") == 200
    assert DataConfig().count("val") == 50
    assert DataConfig().count("test") == 1000


def test_every_numeric_field_has_a_rule() -> None:
    for cls in CONFIGS:
        numeric = {f.name for f in dataclasses.fields(cls) if f.type in ("int", "float")}
        assert numeric == set(cls.RULES), cls.__name__


@pytest.mark.parametrize(("cls", "name"), _rule_cases(),
                         ids=[f"{c.__name__}.{n}" for c, n in _rule_cases()])
def test_bounds(cls: type[Any], name: str) -> None:
    lo, hi, inclusive = cls.RULES[name]
    is_int = name in _int_fields(cls)
    lo_v = int(lo) if is_int else float(lo)
    hi_v = int(hi) if is_int else float(hi)
    assert getattr(cls(**{name: hi_v}), name) == hi_v
    if inclusive:
        assert getattr(cls(**{name: lo_v}), name) == lo_v
    else:
        _refused(cls, name, lo_v)
    _refused(cls, name, _below(lo_v, is_int))
    _refused(cls, name, _above(hi_v, is_int))


@pytest.mark.parametrize(("cls", "name"), [(c, n) for c in CONFIGS for n in _int_fields(c)])
def test_integers_refuse_floats_bools_and_strings(cls: type[Any], name: str) -> None:
    good = getattr(cls(), name)
    for bad in (float(good), good + 0.5, True, False, str(good), None):
        e = _refused(cls, name, bad)
        assert "integer" in e.message


@pytest.mark.parametrize(("cls", "name"),
                         [(c, n) for c in CONFIGS for n in c.RULES if n not in _int_fields(c)])
def test_numbers_accept_ints_and_refuse_bools_strings_non_finite(cls: type[Any],
                                                                 name: str) -> None:
    assert getattr(cls(**{name: 1}), name) == 1
    for bad in (True, "0.01", None, [0.1]):
        assert "number" in _refused(cls, name, bad).message
    for non_finite in (math.nan, math.inf, -math.inf):
        assert "finite" in _refused(cls, name, non_finite).message


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["1e400", "-1e400"])
def test_huge_integers_are_a_config_error_not_an_overflow(value: int) -> None:
    """A Python int beyond float range is refused by the bounds, not an OverflowError."""
    for cls, name in [(TrainConfig, "hidden_size"), (TrainConfig, "seed"), (TrainConfig, "lr"),
                      (DataConfig, "n_val"), (DataConfig, "seed"), (DataConfig, "x_max")]:
        _refused(cls, name, value)


def test_seeds_are_64_bit() -> None:
    _refused(TrainConfig, "seed", 2**63)
    _refused(DataConfig, "seed", 2**63)
    assert DataConfig(seed=2**63 - 1).seed == 2**63 - 1


def test_train_seed_may_be_negative_but_data_seed_may_not() -> None:
    assert TrainConfig(seed=-1).seed == -1
    assert TrainConfig(seed=-(2**63)).seed == -(2**63)
    _refused(DataConfig, "seed", -1)


def test_lr_must_be_positive() -> None:
    _refused(TrainConfig, "lr", 0.0)
    _refused(TrainConfig, "lr", -0.01)
    assert TrainConfig(lr=1e-12).lr == 1e-12


def test_zero_means_off_for_regularisers() -> None:
    cfg = TrainConfig(weight_decay=0.0, grad_clip=0.0, shift=0)
    assert (cfg.weight_decay, cfg.grad_clip, cfg.shift) == (0.0, 0.0, 0)
    _refused(TrainConfig, "weight_decay", -1e-3)
    _refused(TrainConfig, "grad_clip", -1.0)


def test_data_may_have_no_training_curves_but_needs_val_and_test() -> None:
    assert DataConfig(n_train=0).n_train == 0
    _refused(DataConfig, "n_val", 0)
    _refused(DataConfig, "n_test", 0)
    _refused(DataConfig, "length", 1)
    _refused(DataConfig, "max_sines", 0)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_known_devices(device: str) -> None:
    assert TrainConfig(device=device).device == device


@pytest.mark.parametrize("device", ["tpu", "", "GPU", "Auto", 1, None])
def test_unknown_devices(device: Any) -> None:
    with pytest.raises(ConfigValueError) as info:
        TrainConfig(device=device)
    assert info.value.field == "device"


def test_config_value_error_parts() -> None:
    e = ConfigValueError("epochs", "must be >= 1")
    assert isinstance(e, ValueError)
    assert (e.field, e.message, str(e)) == ("epochs", "must be >= 1", "epochs: must be >= 1")


def test_first_bad_field_is_named() -> None:
    with pytest.raises(ConfigValueError) as info:
        TrainConfig(hidden_size=0, epochs=0)
    assert info.value.field == "hidden_size"


def test_frozen() -> None:
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hidden_size = 3  # type: ignore[misc]


def test_check_fields_ignores_fields_without_rules() -> None:
    @dataclasses.dataclass
    class Probe:
        n: int = 1
        x: float = 0.5
        free: str = "anything"

    check_fields(Probe(), {"n": (1, 10, True), "x": (0.0, 1.0, False)})
    check_fields(Probe(n=10, x=1.0), {"n": (1, 10, True), "x": (0.0, 1.0, False)})
    with pytest.raises(ConfigValueError, match="^x: "):
        check_fields(Probe(x=0.0), {"x": (0.0, 1.0, False)})
    with pytest.raises(ConfigValueError, match="^n: "):
        check_fields(Probe(n=11), {"n": (1, 10, True)})
