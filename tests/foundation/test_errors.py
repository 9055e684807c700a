"""hpo.errors: every HpoError message is one line by construction, whatever the user typed into
the name, path or value it quotes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hpo.errors import HpoError, StorageError, first_line, one_line, plural

# Every character str.splitlines() breaks on, which is what a reader (and the tests) count.
BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


@given(st.text(alphabet=st.one_of(st.characters(), st.sampled_from(BREAKS))))
def test_any_quoted_text_stays_on_one_line(typed: str) -> None:
    message = str(StorageError(f"storage {typed}: no such file; fix --storage"))
    assert len(message.splitlines()) == 1
    assert message.startswith("storage ") and message.endswith("fix --storage")


def test_breaks_are_shown_escaped_and_printable_text_kept() -> None:
    for ch in BREAKS:
        assert len(one_line(f"a{ch}b").splitlines()) == 1
    assert one_line("a\nb\x85c") == "a\\nb\\x85c"
    assert one_line("  naïve 🦄 path/ok  ") == "naïve 🦄 path/ok"
    assert HpoError("x\ny").exit_code == 2


def test_first_line_of_a_library_reason() -> None:
    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("")) == "ValueError"


def test_counts_are_plural_unless_one() -> None:
    assert plural(1, "signal") == "1 signal" and plural(0, "signal") == "0 signals"
    assert plural(2, "trial") == "2 trials" and plural(1, "trial") == "1 trial"
    assert plural(3, "validation curve") == "3 validation curves"
    assert plural(2, "process", "processes") == "2 processes"
