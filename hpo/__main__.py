"""`python -m hpo`: how `hpo search` starts its workers."""

from __future__ import annotations

import sys

try:
    from hpo.cli import main
except KeyboardInterrupt:  # Ctrl-C forwarded while a worker was still importing: a clean stop
    sys.exit(130)

main()
