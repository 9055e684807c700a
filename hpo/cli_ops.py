"""Operational commands registered on the main `hpo` app: dashboard, artifacts, maintenance.

Kept apart from hpo/cli.py so each area's commands live beside each other; every command is
still one thin function over library code.
"""

from __future__ import annotations
