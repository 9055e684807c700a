"""A small filesystem that can be filled: a 1 MiB tmpfs mounted for one test (root only), so a
write can fail with ENOSPC part-way through, as on a full disk. Skips with the reason where it
cannot be mounted (not root, no CAP_SYS_ADMIN, no mount binary)."""

from __future__ import annotations

import errno
import gc
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class FullFs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / ".filler"

    def fill(self, leave: int = 0) -> None:
        """Fills the filesystem, then frees about `leave` bytes (whole pages)."""
        chunk = b"\0" * 65536
        try:  # ENOSPC may come as early as the open (no room for a new file): full already
            with self.filler.open("ab") as f:
                while True:
                    f.write(chunk)
                    f.flush()
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
        if not self.filler.exists():
            return
        if leave:
            size = self.filler.stat().st_size
            os.truncate(self.filler, max(0, size - leave))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def files(self) -> list[str]:
        """What is left besides the filler, sorted (hidden temporary files included)."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if p != self.filler)


@pytest.fixture(name="full_fs")
def full_fs_fixture(tmp_path: Path) -> Iterator[FullFs]:
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if os.geteuid() != 0 or not mount or not umount:
        pytest.skip("mounting a tmpfs to fill needs root and mount(8)")
    root = tmp_path / "fs"
    root.mkdir()
    done = subprocess.run([mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield FullFs(root)
    finally:
        if subprocess.run([umount, str(root)], capture_output=True).returncode != 0:
            gc.collect()  # a descriptor left open on the filesystem keeps it busy
            if subprocess.run([umount, str(root)], capture_output=True).returncode != 0:
                subprocess.run([umount, "-l", str(root)], check=False)
