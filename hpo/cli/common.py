"""The app, shared options and output helpers, and the CLI's one error boundary."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from typer._click.exceptions import UsageError  # typer >= 0.2x vendors click here

from hpo import env, resources
from hpo.errors import HpoError, first_line, one_line, undecodable

# emoji=False: rich turns ':smile:' into an emoji even in escaped text, and a message quoting a
# user's key or name must print it as typed (the long property run found ':SMILE' shown as one).
err = Console(stderr=True, emoji=False)


def say_error(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(one_line(message))}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(one_line(message))}", highlight=False,
              soft_wrap=True)


# Each command and the sibling module that registers it (hpo.cli.main imports only that one;
# tests/cli/test_main.py checks the map against the app), in the order a user meets them, which
# is the order `hpo --help` lists them in. Each sibling registers two commands or more: a typer
# app of one command would take that command's arguments as its own.
COMMANDS = {"train": "train", "denoise": "train", "score": "train", "create": "search",
            "search": "search",
            "worker": "search", "studies": "lookup", "best": "lookup", "trials": "lookup",
            "rescore": "retrain", "evaluate": "retrain", "replay": "retrain", "export": "ops",
            "split": "ops",
            "dashboard": "ops", "baselines": "ops", "artifacts": "ops", "fail-stale": "recover",
            "retry-failed": "recover"}
ORDER = tuple(COMMANDS)


class OneLineErrors(typer.core.TyperGroup):
    """The one place a user mistake becomes one line and an exit code: a bad flag (typer would
    draw a framed box), and every HpoError a command raises (a bad file, URL, variable...)."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        kw = {"args": args, "prog_name": prog_name, "complete_var": complete_var,
              "windows_expand_args": windows_expand_args, **extra}
        if not standalone_mode:
            return super().main(standalone_mode=False, **kw)
        try:  # non-standalone: usage errors come back to us instead of being printed
            env.check_all()
            rv = super().main(standalone_mode=False, **kw)
        except UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # plain `hpo`: the help was printed
                sys.exit(0)
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx is not None else "hpo"
            say_error(f"{e.format_message()} (see `{where} --help`)")
            sys.exit(e.exit_code)
        except HpoError as e:
            say_error(str(e))
            sys.exit(e.exit_code)
        except typer.Abort:
            err.print("aborted")
            sys.exit(1)
        except Exception as e:
            message = unreadable(e)
            if message is None:
                raise  # a bug: it keeps its traceback
            say_error(message)
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)  # an int is typer.Exit's code


def unreadable(e: BaseException) -> str | None:
    """The one line for an error raised while reading storage, not only while opening it: a
    damaged SQLite page, an attribute that is not JSON, a driver's refusal mid-query. None for
    anything else (a bug keeps its traceback). Looks only at libraries already imported, so the
    light commands import nothing for it."""
    kinds: list[type[BaseException]] = [sqlite3.DatabaseError, json.JSONDecodeError]
    for module, name in (("sqlalchemy.exc", "SQLAlchemyError"),
                         ("optuna.exceptions", "StorageInternalError")):
        if module in sys.modules:
            kinds.append(getattr(sys.modules[module], name))
    if not isinstance(e, tuple(kinds)) and not _in_optuna_storage(e):
        return None
    if "hpo.store.damage" in sys.modules:  # a storage was read through Optuna: name the row
        try:
            found = sys.modules["hpo.store.damage"].explain(e)
        except Exception:  # noqa: BLE001 - the diagnosis must not replace the error it explains
            found = None
        if found:
            return str(found)
    reason = first_line(e.__cause__ if e.__cause__ is not None and not str(e) else e)
    what = type(e).__name__ if reason == type(e).__name__ else f"{type(e).__name__}: {reason}"
    return (f"the storage could not be read ({what[:200]}); it may be "
            "damaged or written by another tool: check --storage / HPO_STORAGE, restore the "
            "database from a copy, or run `sqlite3 FILE 'PRAGMA integrity_check'` on a SQLite "
            "file")


# Where Optuna turns stored rows into values: a TypeError or ValueError raised there is a row
# that is not what Optuna wrote (a NULL parameter, a distribution that does not parse).
_STORAGE_CODE = ("/optuna/storages/", "/optuna/distributions", "/optuna/trial/_frozen")


def _in_optuna_storage(e: BaseException) -> bool:
    if not isinstance(e, TypeError | ValueError | LookupError | AttributeError | AssertionError
                      | ArithmeticError):
        return False
    return any(any(part in f.filename for part in _STORAGE_CODE)
               for f in traceback.extract_tb(e.__traceback__))


# Bounds a flag takes only to catch typing slips (2**31 - 1, ten years in seconds) say nothing
# to a reader: the help shows the lower bound alone.
SLIP_BOUND = 10**8


def _plain_help() -> None:
    """Help that reads: no type for a flag that takes no value (typer printed `--help <bool>`),
    no bound that only catches typing slips. Leaves typer as it is where it differs."""
    for cls in (getattr(typer.core, "TyperOption", None), getattr(typer.core, "TyperArgument",
                                                                  None)):
        shown_type = getattr(cls, "display_type_rich", None)
        shown_range = getattr(cls, "_get_number_range_help_str", None)
        if cls is None or shown_type is None or shown_range is None:
            continue

        def display_type_rich(self: Any, ctx: Any, _real: Any = shown_type) -> Any:
            if getattr(self, "is_flag", False) and self.metavar is None:
                return None
            return _real(self, ctx)

        def number_range(self: Any, _real: Any = shown_range) -> Any:
            high = getattr(self, "max", None)
            if high is not None and abs(high) >= SLIP_BOUND:
                low = getattr(self, "min", None)
                return None if low is None else f"x>={low}"
            return _real(self)

        cls.display_type_rich = display_type_rich  # type: ignore[method-assign]
        cls._get_number_range_help_str = number_range  # type: ignore[method-assign]


_plain_help()

app = typer.Typer(
    help="Parallel hyperparameter search for an LSTM denoiser on shared Optuna studies.",
    cls=OneLineErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def out() -> Console:
    """Tables on stdout; in a pipe or a log, rich would squeeze them into 80 columns. Cells hold
    names and values as stored (a study made by another tool may be called '[red]x' or
    ':smile:'): no markup, no emoji."""
    width = None if sys.stdout.isatty() else 200
    return Console(width=width, markup=False, emoji=False)


def prog() -> str:
    """hpo as the user invoked it, for the commands it prints: `hpo` when that is what their
    shell finds, else the path they typed (`.venv/bin/hpo` right after the quick start), else
    `python -m hpo` with this interpreter."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "hpo":
        found = shutil.which("hpo")
        if found and os.path.realpath(found) == os.path.realpath(argv0):
            return "hpo"
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m hpo"


def emit_json(obj: Any) -> None:
    from hpo.results.records import strict

    sys.stdout.write(json.dumps(strict(obj), indent=2, allow_nan=False) + "\n")


def threads_or_env(flag: int | None) -> int:
    """--threads, else $HPO_THREADS, else 1; at most one per usable core (a warning line says
    so). Ask once per command: each call warns."""
    threads = flag if flag is not None else env.threads()
    allowed, capped = resources.thread_cap(threads, f"--threads {threads}" if flag is not None
                                           else f"{env.THREADS.name}={threads}")
    if capped:
        warn(capped)
    return allowed


def _text(value: str | None) -> str | None:
    """A study name or URL goes to the database as text; bytes a shell passed that are not UTF-8
    (Python keeps them as lone surrogates) cannot, and must not reach the driver."""
    if value is not None and (shown := undecodable(value)) is not None:
        raise typer.BadParameter(f"'{shown}' is not UTF-8 text; retype it")
    return value


StorageOpt = Annotated[str | None, typer.Option(
    "--storage", envvar=env.STORAGE.name, show_envvar=True, callback=_text,
    help="Database URL (sqlite:///..., postgresql://..., mysql://...). "
         "Default: sqlite file storage/hpo.db under the current directory.")]
def _study(value: str) -> str:
    """A study's name, or a study file (an existing `*.toml`) that names it: deployments and
    scripts then name a study in one place, the file `hpo create` read. Anything else is a
    name, so a study named `x.toml` stays reachable, and a mistyped path meets the storage's
    "no study named" line, which lists the studies there."""
    _text(value)
    if not (value.endswith(".toml") and os.path.isfile(value)):
        return value
    from hpo.study.parse import load_study_file  # only then: `hpo best NAME` stays light

    return load_study_file(value).name


StudyArg = Annotated[str, typer.Argument(
    help="Name of a study in the storage, or the study file (*.toml) that names it.",
    callback=_study, metavar="STUDY")]
# metavar "": a flag takes no value, so its help shows none (typer would print <bool>).
JsonOpt = Annotated[bool, typer.Option("--json", metavar="", help="Print JSON instead of a "
                                                                  "table or text.")]
# The upper bound of every count a flag takes (a trial number, --top, --workers...): beyond it
# a value is a typing slip, and unbounded ones overflow C integers downstream.
MAX_COUNT = 2**31 - 1
MAX_SEED = 2**63 - 1  # seeds go to numpy's SeedSequence and torch.manual_seed, which take 64 bits
ThreadsOpt = Annotated[int | None, typer.Option(
    min=1, max=1024, help="Torch threads per process. Default: $HPO_THREADS, else 1.")]
ArtifactsOpt = Annotated[str | None, typer.Option(
    "--artifacts", envvar=env.ARTIFACTS.name, show_envvar=True,
    help="Artifact directory the workers upload to (shared across machines). Default: "
         "artifacts/ beside a SQLite database, else storage/artifacts.")]


# Optuna's storage (hpo.store.engines, hpo.store.studies: SQLAlchemy, Optuna's ORM, alembic; about
# a second
# of a fresh process) is imported when a command first opens one, not with the CLI: `hpo best`
# and `hpo studies` on a SQLite file never do (hpo.cli.lookup).
def open_storage_url(storage: str | None, create: bool = False,
                     heartbeat: bool = False) -> tuple[str, Any]:
    from hpo.store.engines import open_storage

    url = env.resolve_url(storage)
    return url, open_storage(url, create=create, heartbeat=heartbeat)


def load_study(name: str, storage: str | None, heartbeat: bool = False,
               trains: bool = False) -> tuple[Any, Any]:
    """The study and its spec; says which heartbeat variables the study does not obey. A
    command that `trains` by the stored definition first constructs it as a study file is."""
    from hpo.store import heartbeat as contract
    from hpo.store.studies import load

    study, spec = load(name, open_storage_url(storage, heartbeat=heartbeat)[1])
    if trains:
        from hpo.study.construct import construct
        from hpo.task.source import verify

        verify(spec.source(), name)  # a changed data file, named as such, first
        construct(spec, f"study '{name}' (its stored definition)")
    if (differ := contract.note(study)) is not None:
        warn(differ)
    return study, spec
