"""The child side of a warm worker (`python -m hpo.warm`): import what a worker needs, wait for
the order on stdin, then become `hpo worker`.

`hpo search` starts these before it knows their study (hpo.run.warmpool, the supervisor's side,
says why and how). The order is one JSON line: the worker's arguments, its environment and its
log file. A process entry point like `__main__.py`: it sits above the CLI it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

from hpo.run.warmpool import ORDER_LIMIT


def _serve() -> int:
    """The warm process: import, wait for the order, become `hpo worker`."""
    try:
        import hpo.cli.search  # noqa: F401 - registers `hpo worker`; Optuna and SQLAlchemy
        import hpo.run.objective  # noqa: F401 - torch and the training code
        import hpo.run.worker  # noqa: F401
    except Exception:  # noqa: BLE001, S110 - the worker imports again and logs why it fails
        pass

    line = sys.stdin.buffer.readline(ORDER_LIMIT + 1)
    if not line.endswith(b"\n"):
        return 0  # no order: the search stopped before it needed this worker
    order: dict[str, Any] = json.loads(line)
    os.environ.clear()
    os.environ.update(order["env"])
    fd = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with contextlib.suppress(OSError):  # what it printed while warming, first
        os.lseek(2, 0, os.SEEK_SET)
        early = os.read(2, ORDER_LIMIT)
        if early:
            os.write(fd, early)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # as a freshly started worker's stdin
    os.close(devnull)
    sys.argv = ["hpo", *order["argv"]]
    from hpo.cli import main

    main()  # ends the process with the command's exit code
    return 0


if __name__ == "__main__":
    try:
        code = _serve()
    except KeyboardInterrupt:  # the search's Ctrl-C forwarded while this one was still importing
        code = 130
    os._exit(code)
