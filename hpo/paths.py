"""Output paths checked before any work starts: a directory, an unwritable place, or the input
itself are refused with one line naming the flag, before a model trains or a file is read."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from hpo.errors import HpoError, first_line


class PathError(HpoError):
    """An output path that cannot be written."""


def check_output(path: Path, flag: str, inputs: Iterable[Path] = (), *,
                 overwrite: bool = True) -> Path:
    """Returns `path` if a file can be written there; raises PathError naming `flag`."""
    try:
        return _check(path, flag, inputs, overwrite)
    except OSError as e:  # a name too long, a loop of links, a path through a file...
        raise PathError(f"{flag} {path}: {e.strerror or e}; choose another path") from e


def _check(path: Path, flag: str, inputs: Iterable[Path], overwrite: bool) -> Path:
    if path.is_dir():
        raise PathError(f"{flag} {path} is a directory; give a file path, e.g. {path}/out")
    for source in inputs:
        if source.exists() and path.exists() and os.path.samefile(source, path):
            raise PathError(f"{flag} {path} is the input file itself; write to another path so "
                            "the input is kept")
    if path.exists():
        if not stat.S_ISREG(path.stat().st_mode):
            raise PathError(f"{flag} {path} is not a regular file (a device, pipe or socket); "
                            "give a file path")
        if not overwrite:
            raise PathError(f"{flag} {path} already exists; remove it, choose another path or "
                            "pass --force")
        if not os.access(path, os.W_OK):
            raise PathError(f"{flag} {path} is not writable; choose another path")
        return path
    parent = path.absolute().parent
    ancestor = parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PathError(f"{flag} {path}: {ancestor} is a file, not a directory; choose another "
                        "path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PathError(f"{flag} {path}: cannot create files in {ancestor} (permission "
                        "denied); choose another path")
    if ancestor == parent:
        # os.access answers yes to root everywhere, also in /proc, /sys or a read-only mount;
        # creating the file (and removing it) asks the filesystem itself.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(path)
    return path


@contextlib.contextmanager
def writing(path: Path, flag: str) -> Iterator[None]:
    """Where a checked path still fails when written (a full disk, a quota): one line naming
    the flag. torch reports its file errors as RuntimeError."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else first_line(e)
        raise PathError(f"{flag} {path}: writing failed ({reason}); free space or choose "
                        "another path") from e
