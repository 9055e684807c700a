"""Output paths checked before any work starts: a directory, an unwritable place, or the input
itself are refused with one line naming the flag, before a model trains or a file is read."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
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
            raise PathError(f"{flag} {path} is the input file itself ({source}, which this "
                            "command reads); write to another path so the input is kept")
    if path.is_symlink() and not path.exists():
        raise PathError(f"{flag} {path} is a symbolic link to {os.readlink(path)}, which does "
                        "not exist; remove the link or choose another path")
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


# Below this much free space a failed write is put down to a full disk: torch.save reports one
# as "unexpected pos 64 vs 0", never as ENOSPC.
NEARLY_FULL = 1 << 20


def write_error(path: Path, flag: str | None, e: BaseException, what: str = "the file",
                where: Path | None = None) -> PathError:
    """One line naming the flag, the path and what was being written, with the real cause.
    `where`: the directory to name if the disk is full (default: the nearest existing one)."""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else first_line(e)
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(e, OSError):  # torch's RuntimeError hides the cause: ask the disk
        where = where or _existing_ancestor(path.absolute().parent)
        free = _free_bytes(where)
        if free is not None and free < NEARLY_FULL:
            reason = f"No space left on device: the disk holding {where} is full"
            full = True
    head = f"{flag} {path}" if flag else str(path)
    # Only a full disk or a quota is fixed by freeing space (/proc/self/mem is not).
    fix = "free space or choose another path" if full else "choose another path"
    return PathError(f"{head}: cannot write {what} ({reason}); {fix}")


def _free_bytes(d: Path) -> int | None:
    try:
        return shutil.disk_usage(d).free
    except OSError:
        return None


def _existing_ancestor(d: Path) -> Path:
    while not d.exists() and d != d.parent:
        d = d.parent
    return d


@contextlib.contextmanager
def writing(path: Path, flag: str, what: str = "the file") -> Iterator[None]:
    """Where a checked path still fails when written (a full disk, a quota): one line naming
    the flag. torch reports its file errors as RuntimeError."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        raise write_error(path, flag, e, what) from e


@contextlib.contextmanager
def atomic_write(path: str | Path, flag: str | None = None, what: str = "the file"
                 ) -> Iterator[Path]:
    """Every file hpo writes for the user is written through this: the block writes the yielded
    temporary path (a hidden file in the same directory), which is renamed onto `path` only
    when the block completes. On any failure the temporary file, and any directory made for
    it, is removed, so `path` is either complete or as it was. With a `flag`, a write error
    (OSError, or torch's RuntimeError) becomes one PathError line naming the flag and `what`;
    without one it is raised as it came, for the caller's `writing` to name."""
    path = Path(path)
    # A link is written through, as open() would: its target is replaced, the link stays.
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    made: list[Path] = []
    tmp: Path | None = None
    existing = _existing_ancestor(target.absolute().parent)  # before any directory is made
    try:
        made = _make_parents(target.parent)
        tmp = _create_temp(target)
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
        tmp = None
    except (OSError, RuntimeError) as e:
        if flag is None:
            raise
        raise write_error(path, flag, e, what, existing) from e
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()


def _make_parents(d: Path) -> list[Path]:
    """Creates the missing directories above a file, returning them outermost first."""
    missing = []
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    made: list[Path] = []
    for m in reversed(missing):
        m.mkdir(exist_ok=True)
        made.append(m)
    return made


def _create_temp(target: Path) -> Path:
    """A new empty file beside `target`, created with the mode open() would give it (0666 less
    the umask, or the mode of the file it replaces)."""
    stem = target.name[:200]  # the suffix must still fit the filesystem's name limit
    for _ in range(100):
        tmp = target.with_name(f".{stem}.{secrets.token_hex(4)}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        with contextlib.suppress(OSError):
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        return tmp
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(target.parent))


def _fsync(path: Path) -> None:
    """The bytes on disk before the rename makes them the file (an ENOSPC deferred by the page
    cache surfaces here, not after the rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def expand_home(path: str, what: str) -> str:
    """`~` and `~user` expanded as a shell would, for every path hpo takes (storage, artifacts,
    cache, data files); a user this machine does not know is one line naming `what` (Python's
    Path.expanduser raises a RuntimeError there, os.path's keeps the `~` as a directory name)."""
    if not path.startswith("~"):
        return path
    out = os.path.expanduser(path)
    if out.startswith("~"):
        user = path[1:].split("/", 1)[0]
        raise PathError(f"{what} {path}: this machine has no user {user!r} whose home `~{user}` "
                        "would be; give the full path")
    return out
