"""Tiny data and a tiny study: trials of a fraction of a second, for tests of the machinery."""

from __future__ import annotations

from typing import Any

from hpo.task.curves import DataConfig

# A few curves of the protocol's shape (length 80); enough for the training loop to learn a bit.
TINY_DATA = DataConfig(seed=0, n_train=20, n_val=10, n_test=10)

# A tiny study: trials of a fraction of a second, for tests of the search machinery.
TINY_STUDY: dict[str, Any] = {
    "trials": 8,
    "seed": 0,
    "sampler": {"type": "tpe", "n_startup_trials": 4},
    "pruner": {"type": "none"},
    "space": {
        "hidden_size": {"type": "int", "low": 4, "high": 8},
        "shift": {"type": "int", "low": 0, "high": 5},
        "epochs": {"type": "int", "low": 2, "high": 4},
    },
    "data": {"seed": 0, "train": 20, "val": 10, "test": 10},
}
