"""The `hpo` command line: a thin package of sub-apps over the library.

`common` holds the app, the shared options and the one place where a user mistake (HpoError or
a bad flag) becomes one line on stderr and an exit code. Each sibling registers its commands on
that app, and no sibling imports another (no circles). `hpo.cli.app` is the whole command line
(tests, notebooks); the process entry, `main`, imports only the sibling of the command it runs,
so `hpo best` does not pay for the dashboard's or the search's imports. Commands that train or
load models import those (torch) modules inside themselves: the light commands and the
`hpo search` supervisor never pay for torch.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

from hpo.cli import common

SUBAPPS = tuple(dict.fromkeys(common.COMMANDS.values()))


def load(command: str | None = None) -> Any:
    """The app with `command`'s sibling registered, or every sibling (help, an unknown
    command's error, in-process use)."""
    home = common.COMMANDS.get(command or "")
    for name in (home,) if home else SUBAPPS:
        importlib.import_module(f"hpo.cli.{name}")
    return common.app


def __getattr__(name: str) -> Any:
    if name == "app":  # `from hpo.cli import app`: the whole command line
        return load()
    raise AttributeError(f"module 'hpo.cli' has no attribute {name!r}")


def main() -> None:
    """The process entry (the `hpo` script, `python -m hpo`). When the command is done, the
    process ends at once, its output flushed and its database connections closed: the
    interpreter's teardown (torch's, SQLAlchemy's and Optuna's finalizers) took 0.5 s in a light
    command and about a second in a worker, time a user or a whole search waited for. `app`
    itself stays callable in-process (tests, notebooks) and never ends its caller's process."""
    from hpo.run import warmpool

    try:
        warmpool.prestart(sys.argv)  # `hpo search`: its workers import torch while it validates
        load(sys.argv[1] if len(sys.argv) > 1 else None)()
        code: object = 0
    except SystemExit as e:
        code = e.code
    except KeyboardInterrupt:  # Ctrl-C while the command's modules import: no traceback
        print("aborted", file=sys.stderr)
        code = 130
    finally:
        warmpool.discard()
    if not isinstance(code, int):  # sys.exit("message") or None, as Python would treat them
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    logging.shutdown()
    storage = sys.modules.get("hpo.store.engines")  # none to close where no storage was opened
    if storage is not None:
        storage.close_storages()  # SQLite checkpoints and removes its -wal file on the last close
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["app", "load", "main"]
