"""hpo.resources: memory estimates from shapes alone, the machine's memory, worker caps.

Estimates grow with the number of curves, their length and the model's width; the LSTM's
parameter count; machine/available memory and the cgroup limit; Estimate.fits/too_big; and
worker_cap, which passes a request that fits and caps one that does not with a line naming
--workers and the reason (memory or cores).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hpo import resources
from hpo.resources import Estimate, curves_bytes, human, lstm_params, training_bytes, worker_cap

GIB = 2**30


def test_curves_bytes_grow_with_n_length_and_sines() -> None:
    assert curves_bytes(0, 80) == 0
    assert curves_bytes(2000, 80) == 2 * curves_bytes(1000, 80)
    assert curves_bytes(1000, 160) > curves_bytes(1000, 80)
    assert curves_bytes(1000, 80, max_sines=6) > curves_bytes(1000, 80, max_sines=3)
    # At least the two float32 results (clean and noisy) are held.
    assert curves_bytes(1000, 80) >= 1000 * 80 * 2 * 4


def test_lstm_params_match_the_model() -> None:
    """LSTM(1 -> H) + LSTM(H -> H) + Linear(H -> 1), with torch's two bias vectors per LSTM."""
    for h in (1, 8, 40, 128):
        lstm1 = 4 * h * 1 + 4 * h * h + 2 * 4 * h
        lstm2 = 4 * h * h + 4 * h * h + 2 * 4 * h
        assert lstm_params(h) == lstm1 + lstm2 + h + 1
    assert lstm_params(40) == 20041


def test_training_bytes_grow_with_each_shape() -> None:
    base = training_bytes(hidden=40, shift=10, length=80, batch=10, n_val=50)
    assert training_bytes(80, 10, 80, 10, 50) > base
    assert training_bytes(40, 30, 80, 10, 50) > base
    assert training_bytes(40, 10, 160, 10, 50) > base
    assert training_bytes(40, 10, 80, 100, 50) > base
    assert training_bytes(40, 10, 80, 10, 500) > base
    # At least weights, gradients and Adam's two moments in float32.
    assert base >= 4 * 4 * lstm_params(40)


def test_validation_runs_in_chunks_of_1000() -> None:
    assert training_bytes(40, 10, 80, 10, 1000) == training_bytes(40, 10, 80, 10, 10**9)
    assert training_bytes(40, 10, 80, 10, 999) < training_bytes(40, 10, 80, 10, 1000)


def test_training_bytes_grow_quadratically_in_width() -> None:
    small, large = training_bytes(1000, 0, 80, 1, 1), training_bytes(10_000, 0, 80, 1, 1)
    assert large > 50 * small


def test_machine_memory_is_plausible() -> None:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mem = resources.machine_memory()
    assert 0 < mem <= total
    assert 0 < resources.available_memory() <= mem


def test_cgroup_limit_lowers_machine_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_cgroup_limit", lambda: GIB)
    assert resources.machine_memory() == GIB
    assert resources.available_memory() <= GIB
    monkeypatch.setattr(resources, "_cgroup_limit", lambda: None)
    assert resources.machine_memory() > 0


def test_cgroup_limit_reads_a_number_or_nothing(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    files = {"/sys/fs/cgroup/memory.max": tmp_path / "v2",
             "/sys/fs/cgroup/memory/memory.limit_in_bytes": tmp_path / "v1"}
    real = Path.read_text

    def fake(self: Path, *args: object, **kw: object) -> str:
        target = files.get(str(self))
        if target is None:
            return real(self, *args, **kw)  # type: ignore[arg-type]
        if not target.exists():
            raise FileNotFoundError(str(target))
        return target.read_text()

    monkeypatch.setattr(Path, "read_text", fake)
    assert resources._cgroup_limit() is None  # neither file
    files["/sys/fs/cgroup/memory.max"].write_text("max\n")
    assert resources._cgroup_limit() is None  # v2, unlimited
    files["/sys/fs/cgroup/memory/memory.limit_in_bytes"].write_text("9223372036854771712\n")
    assert resources._cgroup_limit() is None  # v1's "unlimited" sentinel
    files["/sys/fs/cgroup/memory.max"].write_text("2147483648\n")
    assert resources._cgroup_limit() == 2 * GIB


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (512, "512 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (3 * 2**20, "3.0 MiB"),
    (GIB, "1.0 GiB"), (2**40, "1.0 TiB"), (2**50, "1.0 PiB"), (2**60, "1024.0 PiB"),
])
def test_human(n: int, text: str) -> None:
    assert human(n) == text


def test_estimate_fits_against_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "machine_memory", lambda: 8 * GIB)
    assert Estimate(0, "data.val").fits()
    assert Estimate(4 * GIB, "data.val").fits()  # exactly the process share
    assert not Estimate(4 * GIB + 1, "data.val").fits()
    assert Estimate(6 * GIB, "data.val").fits(share=0.75)
    text = resources.too_big(Estimate(10 * GIB, "data.val"))
    assert "memory" in text
    assert "10.0 GiB" in text
    assert "8.0 GiB" in text
    assert "\n" not in text


def test_worker_cap_passes_a_request_that_fits() -> None:
    assert worker_cap(1, 0) == (1, None)
    assert worker_cap(2, 10 * 2**20) == (2, None)


def test_worker_cap_caps_a_million_workers() -> None:
    allowed, why = worker_cap(10**6, 0)
    assert 1 <= allowed < 10**6
    assert allowed <= resources.WORKERS_PER_CORE * (os.cpu_count() or 1)
    assert why is not None
    assert "--workers 1000000" in why
    assert f"starting {allowed}" in why
    assert "\n" not in why
    # What it allows, it allows without a message.
    assert worker_cap(allowed, 0) == (allowed, None)


def test_worker_cap_by_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda: 2 * GIB)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    per = resources.WORKER_BASE_BYTES + 100 * 2**20  # 500 MiB each
    allowed, why = worker_cap(10, 100 * 2**20)
    assert allowed == int(0.9 * 2 * GIB // per) == 3
    assert why is not None
    assert "memory" in why
    assert "--workers 10" in why


def test_worker_cap_by_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda: 1024 * GIB)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert worker_cap(16, 0) == (16, None)
    allowed, why = worker_cap(17, 0)
    assert allowed == 16
    assert why is not None
    assert "core" in why
    assert "--workers 17" in why


def test_worker_cap_allows_one_worker_even_when_memory_is_short(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda: 2**20)
    allowed, why = worker_cap(4, 0)
    assert allowed == 1
    assert why is not None and "memory" in why


def test_bigger_workers_mean_fewer_workers() -> None:
    small, _ = worker_cap(10**6, 0)
    big, _ = worker_cap(10**6, 64 * GIB)
    assert big <= small


def test_more_thread_stacks_than_memory_are_refused_in_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hpo.errors import HpoError

    monkeypatch.setattr(resources, "available_memory", lambda: 1 * 2**30)  # 1 GiB
    resources.check_threads(2, 50)  # 100 stacks, 800 MiB: fits in 90 % of 1 GiB
    with pytest.raises(HpoError, match=r"--threads 100 with 2 workers: 200 torch threads.*"
                                       r"use at most 57 threads per worker"):
        resources.check_threads(2, 100)
