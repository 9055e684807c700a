"""Shared pytest fixtures for the whole suite.

Keep this file small: only fixtures that several test files use belong here; anything else
lives in its own test module. Data here is tiny so that training-based tests run in
milliseconds; tests that need to modify arrays must copy them first (fixtures are shared).
"""

from __future__ import annotations

import pytest

from hpo.data import DataConfig, Split, make_split

# A few curves of the protocol's shape (length 80); enough for the training loop to learn a bit.
TINY_DATA = DataConfig(seed=0, n_train=20, n_val=10, n_test=10)


@pytest.fixture(scope="session")
def tiny_splits() -> tuple[Split, Split]:
    """(train, val) splits of TINY_DATA. Shared: copy before modifying the arrays."""
    return make_split(TINY_DATA, "train"), make_split(TINY_DATA, "val")
