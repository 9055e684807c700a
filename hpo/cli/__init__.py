"""The `hpo` command line: a thin package of sub-apps over the library.

`common` holds the app, the shared options and the one place where a user mistake (HpoError or
a bad flag) becomes one line on stderr and an exit code. Each sibling registers its commands on
that app; this module only imports them, so no module here imports another sibling (no circles).
Commands that train or load models import those (torch) modules inside themselves: the light
commands and the `hpo search` supervisor never pay for torch.
"""

from __future__ import annotations

import logging
import os
import sys

from hpo.cli import maint, ops, query, search, train  # noqa: F401 - they register commands
from hpo.cli.common import app
from hpo.storage import close_storages


def main() -> None:
    """The process entry (the `hpo` script, `python -m hpo`). When the command is done, the
    process ends at once, its output flushed and its database connections closed: the
    interpreter's teardown (torch's, SQLAlchemy's and Optuna's finalizers) took 0.5 s in a light
    command and about a second in a worker, time a user or a whole search waited for. `app`
    itself stays callable in-process (tests, notebooks) and never ends its caller's process."""
    try:
        app()
        code: object = 0
    except SystemExit as e:
        code = e.code
    if not isinstance(code, int):  # sys.exit("message") or None, as Python would treat them
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    logging.shutdown()
    close_storages()  # SQLite checkpoints and removes its -wal file on the last close
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["app", "main"]
