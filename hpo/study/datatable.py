"""A study file's [data] table: the synthetic curves' settings, or the user's own signals.

`data_table` resolves a file study's paths against the study file's directory and applies the
rules every data source follows (hpo.task.source.source_from, which `hpo train`'s flags use too):
keys that do not combine are refused, and the files are described (shape from the header, sha256,
split sizes) into the FileData the study stores; hpo.study.construct then checks it as a worker
will meet it. Each failure is one line naming the study file, the dotted key and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from hpo.errors import InputFileError, StudyFileError
from hpo.paths import expand_home
from hpo.study.construct import fail
from hpo.study.spec import FILE_KEY
from hpo.task.datafile import STUDY_KEYS, FileData
from hpo.task.source import source_from

# Study-file [data] keys and their TOML types.
DATA_KEYS: dict[str, type] = {"seed": int, "train": int, "val": int, "test": int,
                              "noise_ratio": float, "file": str, "noisy_file": str,
                              "normalize": bool, "fresh": bool}


def resolve(path: str, base: Path) -> str:
    """An absolute path: `~` expanded, relative to `base`, normalized (symlinks kept, so that a
    path through a shared mount reads the same on every host)."""
    return os.path.normpath(os.path.join(base.absolute(), expand_home(path, "data file")))


def data_table(d: dict[str, Any], searched: Collection[str], src: str, base: Path
               ) -> dict[str, Any]:
    """The spec's `data`: the study file's keys for the synthetic curves, or {"file": FileData}
    for the user's signals, by the rules `hpo train`'s flags follow too (source_from); the file
    itself is only described here."""
    if "file" in d and "train_curves" in searched:
        raise fail(src, "space.train_curves", "a data.file study trains on the file's own "
                   "training signals; drop [space.train_curves] and set data.train (with "
                   "data.val and data.test) instead")
    paths = {k: resolve(d[k], base) if d[k].strip() else d[k]
             for k in ("file", "noisy_file") if k in d}
    try:
        source = source_from(STUDY_KEYS, seed=d.get("seed", 0), noise_ratio=d.get("noise_ratio"),
                             counts=(d.get("train"), d.get("val"), d.get("test")),
                             file=paths.get("file"), noisy_file=paths.get("noisy_file"),
                             normalize=d.get("normalize", False), fresh=d.get("fresh", False))
    except InputFileError as e:
        raise StudyFileError(f"{src}: {e}") from e
    return {FILE_KEY: source.to_dict()} if isinstance(source, FileData) else d
