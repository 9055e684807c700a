"""Resource bounds from the machine: what a study or a search may ask for before it is refused.

No value a user types may get a process killed by the kernel. So before anything is allocated,
the memory of the data splits and of the largest model in a search space is estimated from the
shapes alone and compared with the machine's memory (the smaller of physical memory and the
cgroup limit), and `hpo search --workers` is capped by memory and cores. The estimates are
deliberately generous upper bounds (float64 temporaries of the curve generator, Adam's state,
the LSTM's saved activations); they only need to be right within a factor of two or so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from hpo.errors import HpoError, plural

# Share of the machine's memory one process may plan to use; the rest is the OS, the database,
# other workers and the estimate's own error.
PROCESS_SHARE = 0.5
# Resident memory of a worker before its data: the interpreter, torch, optuna and SQLAlchemy
# (measured about 330-360 MB on CPU torch 2.13).
WORKER_BASE_BYTES = 400 * 2**20
# More worker processes than this per core only time-share the cores: no trial gets faster.
WORKERS_PER_CORE = 8


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory, or the cgroup limit if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = _cgroup_limit()
    return min(total, limit) if limit else total


def available_memory() -> int:
    """Bytes the kernel says are available now (MemAvailable), at most machine_memory()."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return min(int(line.split()[1]) * 1024, machine_memory())
    except (OSError, ValueError, IndexError):
        pass
    return machine_memory()


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def curves_bytes(n: int, length: int, max_sines: int = 3) -> int:
    """Peak bytes to generate n curves (hpo.task.curves.make_curves): the float64 sine terms and
    their
    masked copy, clean, noise and noisy in float64, then the float32 results."""
    per_curve = length * (2 * max_sines * 8 + 3 * 8 + 2 * 4) + max_sines * 3 * 8
    return n * per_curve


def lstm_params(hidden: int) -> int:
    """Parameters of the denoiser: LSTM 1 -> H, LSTM H -> H, Linear H -> 1."""
    h = hidden
    return 4 * h * (1 + h + 2) + 4 * h * (h + h + 2) + h + 1


def training_bytes(hidden: int, shift: int, length: int, batch: int, n_val: int) -> int:
    """Weights, gradients and Adam's two moments (float32), the activations a batch keeps for
    backward (about a dozen H-wide float32 tensors per step and layer), and validation, which
    runs the curves in chunks of up to 1,000 without gradients."""
    steps = length + shift
    params = 4 * 4 * lstm_params(hidden)
    activations = 2 * 12 * 4 * batch * steps * hidden
    validation = 8 * 4 * min(n_val, 1000) * steps * hidden
    return params + activations + validation


def inference_bytes(hidden: int, shift: int, length: int, n: int) -> int:
    """Denoising n signals with a model: its weights, and the activations of a chunk of up to
    1,000 signals at a time without gradients (each LSTM keeps a few H-wide float32 tensors per
    step), plus the float32 input and output."""
    steps = length + shift
    return 4 * lstm_params(hidden) + 8 * 4 * min(n, 1000) * steps * hidden + 2 * 4 * n * length


@dataclass(frozen=True)
class Estimate:
    bytes: int
    what: str  # the setting responsible, e.g. "data.val" or "space.hidden_size"

    def fits(self, share: float = PROCESS_SHARE) -> bool:
        return self.bytes <= share * machine_memory()


def too_big(e: Estimate) -> str:
    """The sentence an error uses for an estimate that does not fit."""
    return (f"needs about {human(e.bytes)} of memory (estimate), more than "
            f"{PROCESS_SHARE:.0%} of this machine's {human(machine_memory())}")


THREAD_STACK_BYTES = 8 * 2**20  # what each thread reserves for its stack (Linux's default)
# Threads of a worker beside torch's: the interpreter, its heartbeat, the database driver's.
THREADS_PER_WORKER = 4


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def tasks_left() -> int | None:
    """How many more processes and threads this process's pids cgroup lets start (its pids.max
    minus pids.current, cgroup v2 or v1), or None when there is no such limit. A process or
    thread past it fails to start: in torch, a crash (SIGSEGV), not an error."""
    roots = [Path("/sys/fs/cgroup")]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if "pids" in controllers.split(","):
                roots.insert(0, Path("/sys/fs/cgroup/pids") / where.lstrip("/"))
    except (OSError, ValueError):
        pass
    for root in [*roots, Path("/sys/fs/cgroup/pids")]:
        limit, current = _read_int(root / "pids.max"), _read_int(root / "pids.current")
        if limit is not None and current is not None:
            return max(0, limit - current)
    return None


def check_threads(workers: int, threads: int, flag: str = "--threads") -> None:
    """Refuses workers x torch threads that this machine cannot start: their stacks alone
    would not fit in memory (the long property run drew `--workers 13 --threads 232`: 3,016
    threads, 24 GB of stacks), or they pass the pids limit (where torch crashes)."""
    total = workers * threads
    fits = math.floor(0.9 * available_memory() / THREAD_STACK_BYTES)
    if total > fits:
        raise HpoError(
            f"{flag} {threads} with {plural(workers, 'worker')}: {total} torch threads, whose "
            f"stacks alone need {human(total * THREAD_STACK_BYTES)}, more than this machine's "
            f"{human(available_memory())} available; use at most {max(1, fits // workers)} "
            f"threads per worker (one per core is usual)")
    left = tasks_left()
    need = workers * (threads + THREADS_PER_WORKER)
    if left is not None and need > left:
        per = max(1, left // max(workers, 1) - THREADS_PER_WORKER)
        raise HpoError(f"{flag} {threads} with {plural(workers, 'worker')}: about {need} "
                       f"processes and threads, more than the {left} this machine's pids limit "
                       f"leaves; use at most {per} threads per worker (one per core is usual)")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as taskset or a container sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_cap(threads: int, given: str) -> tuple[int, str | None]:
    """Torch threads per process, at most one per usable core: a process cannot run more at
    once, and the tester's `--threads 1024` on 2 cores made 2,048 threads that took 9 minutes
    for a 10-second training. `given` names where the value came from (`--threads 1024`).
    Returns the threads, and a line saying why when capped."""
    cores = usable_cores()
    if threads <= cores:
        return threads, None
    return cores, (f"{given}: using {cores} threads, one per core ({plural(cores, 'core')} "
                   "here; more threads only time-share them)")


def worker_cap(requested: int, per_worker_extra: int, threads: int = 1,
               flag: str = "--workers") -> tuple[int, str | None]:
    """How many workers this machine can run, and a line saying why when it is fewer than
    requested (None when the request fits): by memory, by cores, and by the pids limit."""
    per = WORKER_BASE_BYTES + per_worker_extra
    by_memory = max(1, math.floor(0.9 * available_memory() / per))
    cores = os.cpu_count() or 1
    by_cores = WORKERS_PER_CORE * cores
    left = tasks_left()
    by_pids = None if left is None else max(1, left // (threads + THREADS_PER_WORKER))
    allowed = min(by_memory, by_cores, by_pids if by_pids is not None else by_cores)
    if requested <= allowed:
        return requested, None
    if by_pids is not None and by_pids == allowed:
        why = f"the pids limit leaves {left} processes and threads"
    elif by_memory == allowed:
        why = (f"memory ({human(available_memory())} available) allows {by_memory} of about "
               f"{human(per)} each")
    else:
        why = (f"{plural(cores, 'core')} allow {by_cores} ({WORKERS_PER_CORE} per core; more only "
               "time-share the cores)")
    return allowed, f"{flag} {requested}: starting {allowed}, since {why}"
