"""A study file's [data] table: the synthetic curves' settings, or the user's own signals.

The parser half (data_table) refuses keys that do not combine and, for a file study, resolves
the paths against the study file's directory and describes the files (shape from the header,
sha256, split sizes) into the FileData the study stores (hpo.study.construct then checks it as a
worker will meet it). Each failure is one line naming the study file, the dotted key, the data
file and the fix. numpy only.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from hpo.errors import InputFileError, StudyFileError
from hpo.study.spec import FILE_KEY
from hpo.task.config import ConfigValueError
from hpo.task.curves import DataConfig
from hpo.task.datafile import DEFAULT_FRACTIONS, describe_file

# Study-file [data] keys and their TOML types.
DATA_KEYS: dict[str, type] = {"seed": int, "train": int, "val": int, "test": int,
                              "noise_ratio": float, "file": str, "noisy_file": str,
                              "normalize": bool, "fresh": bool}
COUNTS = ("train", "val", "test")
FILE_ONLY = ("noisy_file", "normalize")
_SHARES = "/".join(f"{round(100 * f)}" for f in DEFAULT_FRACTIONS)


def _fail(src: str, key: str, msg: str) -> StudyFileError:
    return StudyFileError(f"{src}: {key}: {msg}")


def resolve(path: str, base: Path) -> str:
    """An absolute path: `~` expanded, relative to `base`, normalized (symlinks kept, so that a
    path through a shared mount reads the same on every host)."""
    return os.path.normpath(os.path.join(base.absolute(), os.path.expanduser(path)))


def data_table(d: dict[str, Any], searched: Collection[str], src: str, base: Path
               ) -> dict[str, Any]:
    """The spec's `data`: the study file's keys for the synthetic curves, or {"file": FileData}
    for the user's signals. The parser's checks; the file itself is only described here."""
    if "file" not in d:
        for k in FILE_ONLY:
            if k in d:
                raise _fail(src, f"data.{k}", "applies to a study on your own signals only; add "
                            "data.file = \"PATH\" (a .npy or .csv of clean signals) or drop it")
        return d
    if "fresh" in d:
        raise _fail(src, "data.fresh", "fresh curves are drawn from the exercise's generator; "
                    "a data.file study trains on its file's fixed training signals: drop it")
    if "train_curves" in searched:
        raise _fail(src, "space.train_curves", "a data.file study trains on the file's own "
                    "training signals; drop [space.train_curves] and set data.train (with "
                    "data.val and data.test) instead")
    if "noisy_file" in d and "noise_ratio" in d:
        raise _fail(src, "data.noise_ratio", "the noisy inputs come from data.noisy_file, so no "
                    "noise is drawn; drop one of the two")
    given = [k for k in COUNTS if k in d]
    if given and len(given) < len(COUNTS):
        missing = next(k for k in COUNTS if k not in d)
        raise _fail(src, f"data.{missing}", "missing: a data.file study takes data.train, "
                    f"data.val and data.test together, or none of them ({_SHARES} % of the "
                    "file's signals)")
    for k in ("file", "noisy_file"):
        if k in d and not d[k].strip():
            raise _fail(src, f"data.{k}", "is empty; give the path of a .npy or .csv file "
                        "(relative to the study file)")
    try:
        DataConfig(seed=d.get("seed", 0), noise_ratio=d.get("noise_ratio", 0.05))
    except ConfigValueError as e:
        raise _fail(src, f"data.{e.field}", e.message) from e
    try:
        fd = describe_file(resolve(d["file"], base),
                           noisy_path=resolve(d["noisy_file"], base) if "noisy_file" in d
                           else None,
                           counts=(d["train"], d["val"], d["test"]) if given else None,
                           noise_ratio=d.get("noise_ratio", 0.05),
                           normalize=d.get("normalize", False), seed=d.get("seed", 0))
    except InputFileError as e:
        raise StudyFileError(f"{src}: {e}") from e
    return {FILE_KEY: fd.to_dict()}
