"""Every exception hpo raises for a user mistake: an HpoError whose message is one line naming
the file, field, flag or variable and the fix. The CLI prints it and exits non-zero; anything
else is a bug and keeps its traceback."""

from __future__ import annotations

import re

# A message may quote what the user typed (a key, a path, a name); its control characters are
# shown escaped, so that every message is one line by construction.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # all that str.splitlines() splits on


def one_line(message: str) -> str:
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], message.strip())


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`n noun`, in the plural unless n is 1: plural(1, "signal") == "1 signal"."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def undecodable(value: str) -> str | None:
    """`value` shown with its bytes escaped if it is not UTF-8 text (bytes a shell passed that
    Python keeps as lone surrogates, which no database driver takes), else None."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode(errors="surrogateescape").decode(errors="backslashreplace")
    return None


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (a library's reason; for SQLAlchemy's wrapper,
    the driver's own), or its type's name."""
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class HpoError(Exception):
    """Base of every error caused by the user's input or environment."""

    exit_code = 2

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


class InputFileError(HpoError):
    """A CSV or model file that cannot be used."""


class StudyFileError(HpoError):
    """A study file (TOML) that does not validate."""


class StorageError(HpoError):
    """A storage URL that is malformed, unreachable or holds no such study."""


class StudyMismatchError(HpoError):
    """A study file that no longer matches the study already in storage."""


class EnvError(HpoError):
    """An environment variable whose value cannot be used."""


class ArtifactError(HpoError):
    """An artifact store that cannot be used, or an artifact that is not there."""


class DashboardError(HpoError):
    """A dashboard that cannot start (port taken, bad host)."""


class WorkerError(HpoError):
    """A worker that had to give up (its trials keep failing, or the storage is gone)."""
