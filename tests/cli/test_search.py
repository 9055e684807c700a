"""hpo.cli.search: the hints a search prints run as printed."""

from __future__ import annotations

import pytest

from hpo.cli.search import next_steps


def test_hints_give_the_storage_as_the_user_gave_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPO_STORAGE", raising=False)
    assert "--storage" not in next_steps("s", None)
    plain = next_steps("s", "sqlite:////tmp/my dir/hpo.db")
    assert "hpo best s --storage 'sqlite:////tmp/my dir/hpo.db' --json" in plain  # quoted
    secret = next_steps("s", "postgresql://u:s3cret@db/hpo")
    assert "s3cret" not in secret and "***" not in secret  # *** would not connect
    assert "--storage URL" in secret and "password is not printed" in secret
    monkeypatch.setenv("HPO_STORAGE", "postgresql://u:s3cret@db/hpo")  # still set in the shell
    from_env = next_steps("s", "postgresql://u:s3cret@db/hpo")
    assert "--storage" not in from_env and "s3cret" not in from_env
