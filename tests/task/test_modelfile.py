"""hpo.task.modelfile: a model file's metadata is believed only after its weights and its size
say the same; nothing is built or inflated first."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from hpo import resources
from hpo.errors import InputFileError
from hpo.task import modelfile
from hpo.task.config import TrainConfig
from hpo.task.curves import DataConfig
from hpo.task.model import Denoiser
from hpo.task.modelfile import expected_shapes, load_model, save_model


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return save_model(tmp_path / "m.pt", Denoiser(4, 2), TrainConfig(hidden_size=4, shift=2),
                      DataConfig())


def test_the_expected_shapes_are_a_real_denoisers(saved: Path) -> None:
    net, meta = load_model(saved)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected_shapes(4)
    assert meta["hidden_size"] == 4


@pytest.mark.parametrize("change,words", [
    ({"hidden_size": 12000}, "do not match hidden_size 12000"),
    ({"hidden_size": True}, "whole numbers"),
    ({"shift": -1}, "out of range"),
    ({"hidden_size": "4"}, "whole numbers"),
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
