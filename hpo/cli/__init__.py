"""The `hpo` command line: a thin package of sub-apps over the library.

`common` holds the app, the shared options and the one place where a user mistake (HpoError or
a bad flag) becomes one line on stderr and an exit code. Each sibling registers its commands on
that app; this module only imports them, so no module here imports another sibling (no circles).
Commands that train or load models import those (torch) modules inside themselves: the light
commands and the `hpo search` supervisor never pay for torch.
"""

from __future__ import annotations

from hpo.cli import common, maint, ops, query, search, train  # noqa: F401 - they register commands
from hpo.cli.common import app


def main() -> None:
    """The process entry (the `hpo` script, `python -m hpo`); `app` itself stays callable
    in-process (tests, notebooks) without ever ending the caller's process early."""
    common.PROCESS_ENTRY = True
    app()


__all__ = ["app", "main"]
