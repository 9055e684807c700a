"""Maintenance commands registered on the main `hpo` app: bulk controls over failed and stale
trials. Each command is one thin function over library code."""

from __future__ import annotations
