"""hpo.cli.common: the CLI's one error boundary and what every command shares.

Every integer a flag or argument takes is bounded (a value past 2**63 once reached SQL as an
OverflowError), and an error line stays one line whatever it quotes.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import typer

from hpo.cli import app
from hpo.cli.common import MAX_COUNT, MAX_SEED
from hpo.errors import HpoError, one_line


def _params(cmd: Any, path: str = "hpo") -> Iterator[tuple[str, Any]]:
    for p in cmd.params:
        yield path, p
    for name, sub in getattr(cmd, "commands", {}).items():  # a group's sub-commands
        yield from _params(sub, f"{path} {name}")


def _is_int(p: Any) -> bool:
    """typer (>= 0.2x) keeps a parameter's annotation; `int | None` counts as int."""
    t = p.type_descriptor.annotation
    return t is int or int in typing.get_args(t)


def test_every_integer_flag_has_both_bounds() -> None:
    ints = [(where, p) for where, p in _params(typer.main.get_command(app)) if _is_int(p)]
    assert len(ints) >= 15  # the walk reaches the sub-commands' options
    unbounded = [f"{where} {p.name}" for where, p in ints if p.min is None or p.max is None]
    assert not unbounded, unbounded
    assert all(p.max <= (MAX_SEED if "seed" in p.name else MAX_COUNT) for _, p in ints)


def test_one_line_escapes_what_would_break_the_line() -> None:
    assert one_line("bad\nkey\r\tx\x1b[31m\u2028end\n") == "bad\\nkey\\r\\tx\\x1b[31m\\u2028end"
    assert one_line("plain: ünïcode stays") == "plain: ünïcode stays"
    assert str(HpoError("a.toml: \n: unknown key")) == "a.toml: \\n: unknown key"


def test_names_and_urls_that_are_not_utf8_are_refused_in_one_line(tmp_path: Any) -> None:
    """Bytes a shell passes that are not UTF-8 reach Python as lone surrogates; a study name or
    storage URL made of them used to end in the SQL driver's UnicodeEncodeError."""
    from typer.testing import CliRunner

    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    runner = CliRunner()
    for args in (["best", "a\udc85b", "--storage", url],
                 ["studies", "--storage", "sqlite:////x\udcff"],
                 ["worker", "\udcff", "--storage", url],
                 ["fail-stale", "s\udc80", "--storage", url]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "not UTF-8 text" in lines[0], lines
    assert not (tmp_path / "hpo.db").exists()


def test_errors_and_tables_print_names_as_typed(capsys: Any) -> None:
    """rich replaces ':smile:' with an emoji even in escaped text, and parses '[red]' in table
    cells as markup; a key, name or value quoted back to the user must read as typed."""
    from rich.table import Table

    from hpo.cli.common import out, say_error

    say_error("studies/x.toml: unknown key ':SMILE:' in [space]; remove it")
    table = Table()
    table.add_column("name")
    for name in (":smile:", "[red]x[/red]", "[bold]"):
        table.add_row(name)
    out().print(table)
    captured = capsys.readouterr()
    assert "':SMILE:'" in captured.err and "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}" \
        not in captured.err
    for name in (":smile:", "[red]x[/red]", "[bold]"):
        assert name in captured.out


def test_a_study_file_names_its_study_wherever_a_study_name_goes(tmp_path: Any) -> None:
    """`hpo best studies/x.toml` is `hpo best x`: deployments name a study once, by its file.
    A STUDY ending in .toml that is no file is a name (a study may be named so): a mistyped
    path meets the storage's one line listing its studies."""
    import shutil
    from pathlib import Path

    from typer.testing import CliRunner

    root = Path(__file__).resolve().parents[2]
    db = tmp_path / "hpo.db"
    shutil.copy(root / "tests/fixtures/before-packages/hpo.db", db)
    url = f"sqlite:///{db}"
    runner = CliRunner()
    by_name = runner.invoke(app, ["best", "smoke", "--json", "--storage", url])
    by_file = runner.invoke(app, ["best", str(root / "studies/smoke.toml"), "--json",
                                  "--storage", url])
    assert by_name.exit_code == 0 and '"number": 0' in by_name.output
    assert by_file.exit_code == 0 and by_file.output == by_name.output
    missing = runner.invoke(app, ["best", str(tmp_path / "gone.toml"), "--storage", url])
    assert missing.exit_code == 2
    assert "no study named" in missing.output and "gone.toml" in missing.output
    assert "smoke" in missing.output  # the studies it has
