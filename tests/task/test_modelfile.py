"""hpo.task.modelfile: a model file's metadata is believed only after its weights and its size
say the same; nothing is built or inflated first."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hpo import resources
from hpo.errors import InputFileError
from hpo.paths import PathError
from hpo.task import modelfile
from hpo.task.config import TrainConfig
from hpo.task.curves import DataConfig
from hpo.task.datafile import FileData
from hpo.task.model import Denoiser
from hpo.task.modelfile import expected_shapes, load_model, save_model, trained_length
from tests.support.fullfs import FullFs, full_fs_fixture  # noqa: F401 (the full_fs fixture)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_model(tmp_path / "m.pt", Denoiser(4, 2), TrainConfig(hidden_size=4, shift=2),
                      DataConfig())


def test_the_expected_shapes_are_a_real_denoisers(saved: Path) -> None:
    net, meta = load_model(saved)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected_shapes(4)
    assert meta["hidden_size"] == 4


@pytest.mark.parametrize("change,words", [
    ({"hidden_size": 12000, "train": asdict(TrainConfig(hidden_size=12000, shift=2))},
     "do not match hidden_size 12000"),
    ({"hidden_size": 12000}, "meta.train.hidden_size: is 4 but hidden_size is 12000"),
    ({"hidden_size": True}, "meta.hidden_size: must be a whole number"),
    ({"shift": -1}, "meta.shift: must be >= 0"),
    ({"hidden_size": "4"}, "meta.hidden_size: must be a whole number"),
])
def test_metadata_that_the_weights_contradict_is_refused_before_any_model_is_built(
        saved: Path, change: dict[str, object], words: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    blob = torch.load(saved, weights_only=True)
    blob["meta"].update(change)
    torch.save(blob, saved)

    def never(*a: object) -> None:
        raise AssertionError("a model was built from metadata the weights contradict")

    monkeypatch.setattr(modelfile, "Denoiser", never)
    with pytest.raises(InputFileError) as info:
        load_model(saved)
    assert words in str(info.value) and len(str(info.value).splitlines()) == 1


def test_a_file_that_would_inflate_past_memory_is_refused_before_torch_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", b"\0" * (64 * 2**20))
    assert bomb.stat().st_size < 2**20
    monkeypatch.setattr(resources, "machine_memory", lambda: 32 * 2**20)

    def never(*a: object, **k: object) -> None:
        raise AssertionError("torch.load ran on a file that inflates past memory")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(InputFileError, match="inflate to 64.0 MiB"):
        load_model(bomb)


# --- every metadata field parsed at the boundary ---------------------------------------------


def _edited(saved: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    blob = torch.load(saved, weights_only=True)
    edit(blob)
    torch.save(blob, saved)
    return saved


def _set(dotted: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(blob: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        d = blob
        for p in parents:
            d = d[p]
        d[last] = value
    return edit


def _refused(path: Path) -> str:
    with pytest.raises(InputFileError) as info:
        load_model(path)
    text = str(info.value)
    assert text.startswith(f"{path}: damaged hpo model file") and "\n" not in text
    return text


@pytest.fixture
def from_file(tmp_path: Path) -> Path:
    """A model file trained on a data file: meta.data is file_meta's description."""
    fd = FileData(str(tmp_path / "d.csv"), "ab" * 32, (30, 16), seed=1, normalize=True)
    return save_model(tmp_path / "f.pt", Denoiser(4, 2), TrainConfig(hidden_size=4, shift=2), fd)


BAD_SYNTHETIC = [
    ("meta.data.length", -80, "meta.data.length: must be >= 2"),
    ("meta.data.length", 80.0, "meta.data.length: must be an integer"),
    ("meta.data.x_max", math.nan, "meta.data.x_max: must be finite"),
    ("meta.data.x_max", math.inf, "meta.data.x_max: must be finite"),
    ("meta.data.fresh", "yes", "meta.data.fresh: must be true or false"),
    ("meta.data.colour", 1, "meta.data.colour: unknown field"),
    ("meta.data", [1, 2], "meta.data: must be a table"),
    ("meta.normalize", {"mean": "x"}, "meta.normalize: must be true or false"),
    ("meta.normalize", 1, "meta.normalize: must be true or false"),
    ("meta.train.lr", math.nan, "meta.train.lr: must be finite"),
    ("meta.train.epochs", 0, "meta.train.epochs: must be >= 1"),
    ("meta.train.hidden_size", 5, "meta.train.hidden_size: is 5 but hidden_size is 4"),
    ("meta.scores.val_removed", math.nan, "meta.scores.val_removed: must be finite"),
    ("meta.scores.val_removed", "93", "meta.scores.val_removed: must be a number"),
    ("meta.torch", 2, "meta.torch: must be text"),
    ("meta.shift", -1, "meta.shift: must be >= 0"),
]


@pytest.mark.parametrize("field,value,words", BAD_SYNTHETIC,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_SYNTHETIC])
def test_every_metadata_field_is_parsed_into_its_type_and_bounds(
        saved: Path, field: str, value: object, words: str) -> None:
    assert words in _refused(_edited(saved, _set(field, value)))


BAD_FILE = [
    ("meta.data.length", -80, "meta.data.length: must be >= 2"),
    ("meta.data.length", 17, "meta.data.length: is 17 but data.shape says 16 points"),
    ("meta.data.shape", [30, 0], "meta.data.shape[1]: must be >= 1"),
    ("meta.data.sha256", "x", "meta.data.sha256: must be a sha256"),
    ("meta.data.noise_ratio", math.nan, "meta.data.noise_ratio: must be finite"),
    ("meta.data.splits", [30, 30, 30], "meta.data.splits: [30, 30, 30] add up to more"),
    ("meta.data.normalize", "true", "meta.data.normalize: must be true or false"),
    ("meta.data.seed", -1, "meta.data.seed: must be >= 0"),
]


@pytest.mark.parametrize("field,value,words", BAD_FILE,
                         ids=[f"{f}={v!r}" for f, v, _ in BAD_FILE])
def test_a_data_file_s_description_is_parsed_too(from_file: Path, field: str, value: object,
                                                words: str) -> None:
    assert words in _refused(_edited(from_file, _set(field, value)))


def test_files_as_hpo_writes_them_load(saved: Path, from_file: Path) -> None:
    assert load_model(saved)[1]["data"]["length"] == 80
    meta = load_model(from_file)[1]
    assert meta["normalize"] is True and trained_length(meta) == 16


def test_fields_older_files_lack_keep_their_meaning(saved: Path) -> None:
    def drop(blob: dict[str, Any]) -> None:
        for key in ("normalize", "scores", "torch", "train", "data"):
            del blob["meta"][key]
    _, meta = load_model(_edited(saved, drop))
    assert trained_length(meta) is None


@pytest.mark.parametrize("fill,words", [(math.nan, "NaN weights"), (math.inf, "infinite")])
def test_non_finite_weights_are_refused_at_load(saved: Path, fill: float, words: str) -> None:
    text = _refused(_edited(saved, lambda b: b["state_dict"]["head.weight"].fill_(fill)))
    assert f"state_dict.head.weight: holds {words}" in text


def test_integer_weights_are_refused(saved: Path) -> None:
    def cast(blob: dict[str, Any]) -> None:
        blob["state_dict"]["head.bias"] = blob["state_dict"]["head.bias"].long()
    assert "state_dict.head.bias: holds torch.int64 values" in _refused(_edited(saved, cast))


# Values that are never a valid positive length, finite float or boolean.
NOT_A_LENGTH = st.one_of(st.integers(max_value=1), st.floats(), st.booleans(), st.text(max_size=3),
                         st.none(), st.lists(st.integers(), max_size=2))
NOT_FINITE_POSITIVE = st.one_of(st.floats().filter(lambda v: not math.isfinite(v) or v <= 0),
                                st.booleans(), st.text(max_size=3), st.none())
NOT_A_BOOL = st.one_of(st.integers(), st.floats(), st.text(max_size=3), st.none(),
                       st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field_value=st.one_of(
    st.tuples(st.just("meta.data.length"), NOT_A_LENGTH),
    st.tuples(st.just("meta.data.x_max"), NOT_FINITE_POSITIVE),
    st.tuples(st.just("meta.train.lr"), NOT_FINITE_POSITIVE),
    st.tuples(st.just("meta.normalize"), NOT_A_BOOL),
    st.tuples(st.just("meta.data.fresh"), NOT_A_BOOL),
    st.tuples(st.just("meta.hidden_size"), NOT_A_LENGTH.filter(lambda v: v != 1)),
))
def test_any_bad_value_of_a_field_is_one_line_naming_that_field(
        saved: Path, field_value: tuple[str, object]) -> None:
    field, value = field_value
    blob = torch.load(saved, weights_only=True)
    _set(field, value)(blob)
    bad = saved.with_name("bad.pt")
    torch.save(blob, bad)
    assert field in _refused(bad)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(2, 10**9), x_max=st.floats(1e-6, 1e12), normalize=st.booleans())
def test_any_good_value_loads_as_written(saved: Path, length: int, x_max: float,
                                         normalize: bool) -> None:
    blob = torch.load(saved, weights_only=True)
    blob["meta"]["data"].update(length=length, x_max=x_max)
    blob["meta"]["normalize"] = normalize
    good = saved.with_name("good.pt")
    torch.save(blob, good)
    meta = load_model(good)[1]
    assert trained_length(meta) == length and meta["normalize"] is normalize


def test_a_model_file_on_a_full_disk_leaves_no_file(full_fs: FullFs) -> None:
    """torch.save's "unexpected pos" RuntimeError is reported as the full disk it is."""
    full_fs.fill(leave=8 * 1024)
    out = full_fs.root / "m.pt"
    with pytest.raises(PathError) as info:
        save_model(out, Denoiser(64, 2), TrainConfig(hidden_size=64, shift=2), DataConfig(),
                   flag="--save")
    assert str(info.value).startswith(f"--save {out}: cannot write the model file (No space "
                                      "left on device")
    assert full_fs.files() == []
