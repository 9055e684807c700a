"""A small base of exceptions: every user mistake is an HpoError whose message is one line
naming the file, field or flag and the fix. The CLI prints it and exits non-zero; anything
else is a bug and keeps its traceback."""

from __future__ import annotations


class HpoError(Exception):
    """Base of every error caused by the user's input or environment."""

    exit_code = 2


class InputFileError(HpoError):
    """A CSV or model file that cannot be used."""


class StudyFileError(HpoError):
    """A study file (TOML) that does not validate."""


class StorageError(HpoError):
    """A storage URL that is malformed, unreachable or holds no such study."""


class StudyMismatchError(HpoError):
    """A study file that no longer matches the study already in storage."""
