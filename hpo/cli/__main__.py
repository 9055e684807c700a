"""`python -m hpo.cli`, as before the CLI became a package (`python -m hpo` does the same)."""

from __future__ import annotations

from hpo.cli import main

main()
