"""hpo.paths.check_output: output paths refused before any work starts.

A directory, the input file itself (also through a link), a parent that is a file, an existing
file without overwrite, and unwritable places are refused with one line naming the flag; a new
file, a missing parent (created later) and an overwritable file are accepted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

import pytest

from hpo.errors import HpoError
from hpo.paths import PathError, atomic_write, check_output, writing
from tests.support.fullfs import FullFs, full_fs_fixture  # noqa: F401 (the full_fs fixture)

not_root = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                             reason="root may write anywhere; permissions cannot be tested")


def _refused(path: Path, inputs: Iterable[Path] = (), *, overwrite: bool = True) -> str:
    with pytest.raises(PathError) as info:
        check_output(path, "--out", inputs, overwrite=overwrite)
    text = str(info.value)
    assert text.startswith(f"--out {path}")
    assert "\n" not in text
    return text


def test_path_error_is_an_hpo_error() -> None:
    assert issubclass(PathError, HpoError)


def test_new_file_in_an_existing_directory(tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    assert check_output(out, "--out") == out
    assert not out.exists()  # checking creates nothing


def test_missing_parents_are_fine(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "c" / "out.csv"
    assert check_output(out, "--out") == out
    assert not (tmp_path / "a").exists()


def test_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_output(Path("out.csv"), "--out") == Path("out.csv")
    assert check_output(Path("sub/out.csv"), "--out") == Path("sub/out.csv")


def test_directory_is_refused(tmp_path: Path) -> None:
    assert "is a directory" in _refused(tmp_path)
    (tmp_path / "d").mkdir()
    assert "is a directory" in _refused(tmp_path / "d", overwrite=False)


def test_the_input_itself_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "signals.csv"
    src.write_text("1,2,3\n")
    other = tmp_path / "other.csv"
    other.write_text("4\n")
    assert "input file itself" in _refused(src, [other, src])
    assert src.read_text() == "1,2,3\n"
    assert check_output(other, "--out", [src]) == other  # another existing file is fine


def test_the_input_through_a_link_or_relative_path(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "signals.csv"
    src.write_text("1\n")
    link = tmp_path / "link.csv"
    link.symlink_to(src)
    hard = tmp_path / "hard.csv"
    os.link(src, hard)
    assert "input file itself" in _refused(link, [src])
    assert "input file itself" in _refused(hard, [src])
    monkeypatch.chdir(tmp_path)
    assert "input file itself" in _refused(Path("signals.csv"), [src])


def test_missing_inputs_are_ignored(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert check_output(out, "--out", [tmp_path / "missing.csv"]) == out
    out.write_text("x")
    assert check_output(out, "--out", [tmp_path / "missing.csv"]) == out


def test_parent_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert "is a file, not a directory" in _refused(f / "out.csv")
    assert str(f) in _refused(f / "deeper" / "out.csv")


def test_existing_file_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("keep")
    text = _refused(out, overwrite=False)
    assert "already exists" in text
    assert "--force" in text
    assert out.read_text() == "keep"
    assert check_output(out, "--out") == out  # overwrite is the default
    assert check_output(out, "--out", overwrite=True) == out


def test_the_flag_is_named(tmp_path: Path) -> None:
    with pytest.raises(PathError, match=r"^--plot "):
        check_output(tmp_path, "--plot")


@not_root
def test_unwritable_file(tmp_path: Path) -> None:
    out = tmp_path / "ro.csv"
    out.write_text("x")
    out.chmod(0o444)
    assert "not writable" in _refused(out)


@not_root
def test_unwritable_directory(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        assert "permission denied" in _refused(d / "out.csv")
        assert "permission denied" in _refused(d / "sub" / "out.csv")
    finally:
        d.chmod(0o755)


def test_unwritable_places_whatever_the_user(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The same refusals as above, with os.access saying no (so they run as root too)."""
    out = tmp_path / "out.csv"
    out.write_text("x")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert "not writable" in _refused(out)
    assert "permission denied" in _refused(tmp_path / "new.csv")
    assert "permission denied" in _refused(tmp_path / "sub" / "new.csv")


@pytest.mark.parametrize("place", ["/proc", "/sys"])
def test_places_that_refuse_files_even_to_root(place: str) -> None:
    """os.access answers yes to root in /proc and /sys; creating the file asks the kernel."""
    if not Path(place).is_dir():
        pytest.skip(f"{place} is not mounted here")
    assert "choose another path" in _refused(Path(place) / "model.pt")


def test_a_name_longer_than_the_filesystem_allows(tmp_path: Path) -> None:
    assert "too long" in _refused(tmp_path / ("a" * 300 + ".pt"))


def test_devices_and_pipes_are_not_output_files(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "not a regular file" in _refused(fifo)
    if Path("/dev/full").exists():
        assert "not a regular file" in _refused(Path("/dev/full"))


def test_a_write_that_fails_later_is_one_line_naming_the_flag() -> None:
    """A full disk: /dev/full refuses every byte with ENOSPC."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    with pytest.raises(PathError) as info, writing(Path("/dev/full"), "--save"), \
            open("/dev/full", "wb") as f:
        f.write(b"x" * 100_000)
    assert str(info.value).startswith("--save /dev/full: cannot write the file (No space left")
    assert "\n" not in str(info.value)


def test_torch_style_write_errors_are_translated_too(tmp_path: Path) -> None:
    with pytest.raises(PathError, match=r"^--out .*: cannot write the file \(\[enforce fail\]"), \
            writing(tmp_path / "m.pt", "--out"):
        raise RuntimeError("[enforce fail] open file failed\nstack trace...")


def test_a_dangling_link_is_named_as_one(tmp_path: Path) -> None:
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "gone" / "x.csv")
    text = _refused(link)
    assert "symbolic link" in text and "does not exist" in text and "File exists" not in text


# --- atomic_write: the one way hpo writes a file for the user -------------------------------


def test_an_atomic_write_appears_whole_with_open_s_mode(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "out.csv"
    with atomic_write(out, "--out") as tmp:
        assert tmp.parent == out.parent and tmp != out
        tmp.write_text("1,2\n")
        assert not out.exists()  # nothing at the path until the block completes
    assert out.read_text() == "1,2\n"
    assert os.listdir(out.parent) == ["out.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_an_atomic_write_keeps_the_replaced_file_s_mode_and_writes_through_a_link(
        tmp_path: Path) -> None:
    target = tmp_path / "real.csv"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with atomic_write(link, "--out") as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    out.write_text("old")
    with pytest.raises(ZeroDivisionError), atomic_write(out, "--out") as tmp:
        tmp.write_text("half")
        1 / 0  # noqa: B018
    assert out.read_text() == "old" and os.listdir(tmp_path) == ["out.csv"]


def test_a_failed_atomic_write_removes_the_directories_it_made(tmp_path: Path) -> None:
    with pytest.raises(PathError), atomic_write(tmp_path / "a" / "b" / "m.pt", "--save"):
        raise OSError(5, "Input/output error")
    assert os.listdir(tmp_path) == []


def test_without_a_flag_the_error_is_raised_as_it_came(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="boom"), atomic_write(tmp_path / "x"):
        raise OSError("boom")
    assert os.listdir(tmp_path) == []


def test_a_full_disk_leaves_no_file_and_says_so(full_fs: FullFs) -> None:
    full_fs.fill(leave=64 * 1024)
    out = full_fs.root / "out.csv"
    with pytest.raises(PathError) as info, atomic_write(out, "--output", "the denoised signals"
                                                       ) as tmp:
        tmp.write_bytes(b"1.2345," * 100_000)
    text = str(info.value)
    assert text == (f"--output {out}: cannot write the denoised signals (No space left on "
                    "device); free space or choose another path")
    assert full_fs.files() == []


def test_torch_s_runtime_error_on_a_full_disk_is_put_down_to_the_disk(full_fs: FullFs) -> None:
    """torch.save says "unexpected pos 64 vs 0"; the disk is asked what happened."""
    full_fs.fill()
    out = full_fs.root / "m.pt"
    with pytest.raises(PathError) as info, atomic_write(out, "--save", "the model file"):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
    assert str(info.value) == (
        f"--save {out}: cannot write the model file (No space left on device: the disk holding "
        f"{full_fs.root} is full); free space or choose another path")
    assert full_fs.files() == []


def test_a_home_of_a_user_this_machine_does_not_know_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`~nosuchuser/x` made Path.expanduser raise a RuntimeError (a traceback in the worker,
    the dashboard, prune and baselines) and a search create its study before its workers
    died of it. Every path variable and the storage URL say it in one line, before anything
    is written."""
    from typer.testing import CliRunner

    from hpo import env
    from hpo.cli import app
    from hpo.paths import expand_home

    assert expand_home("~/x", "v") == str(Path.home() / "x")
    assert expand_home("/a/~b", "v") == "/a/~b"
    with pytest.raises(PathError, match=r"^HPO_X ~nosuchuser/x: this machine has no user "
                                        r"'nosuchuser'"):
        expand_home("~nosuchuser/x", "HPO_X")
    smoke = str(Path(__file__).resolve().parents[2] / "studies" / "smoke.toml")
    db = tmp_path / "hpo.db"
    monkeypatch.setenv("HPO_CACHE_DIR", "~nosuchuser/c")
    with pytest.raises(PathError, match="^HPO_CACHE_DIR ~nosuchuser/c: this machine has no user"):
        env.cache_dir()  # (`hpo baselines` may answer from this process's memory)
    monkeypatch.delenv("HPO_CACHE_DIR")
    for variable, argv in (("HPO_ARTIFACTS", ["search", smoke, "--storage", f"sqlite:///{db}"]),
                           ("HPO_STORAGE", ["studies"])):
        value = "sqlite:///~nosuchuser/h.db" if variable == "HPO_STORAGE" else "~nosuchuser/x"
        monkeypatch.setenv(variable, value)
        r = CliRunner().invoke(app, argv)
        monkeypatch.delenv(variable)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and "no user 'nosuchuser'" in lines[0], (
            variable, r.output)
    assert not db.exists()  # the search refused before it made its study
