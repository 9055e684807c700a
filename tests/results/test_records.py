"""hpo.results.records: one record per trial for every command in one vocabulary (Optuna's
names for states, objectives and flattened columns), its table, and the Pareto front without
numpy."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from hpo.results.records import (
    SUMMARY_ATTRS,
    SUMMARY_FIELDS,
    TIMES,
    TRIAL_FIELDS,
    objective_names,
    pareto_best,
    pareto_front,
    pm,
    record,
    to_csv,
    trials_table,
    with_rescores,
)

NAMES = ["% noise removed on validation", "training seconds per seed"]


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def test_pareto_front_keeps_ties_and_drops_dominated() -> None:
    points = [(1.0, 2.0), (1.0, 2.0), (0.0, 3.0), (2.0, 2.0), (1.0, 1.0), (3.0, 0.0)]
    assert pareto_front(points) == [2, 4, 5]
    assert pareto_front([(1.0, 2.0), (1.0, 2.0)]) == [0, 1]
    assert pareto_front([]) == []


@given(st.lists(st.tuples(*[st.sampled_from([0.0, 1.0, 2.0, 3.5, float("inf"),
                                             float("-inf")])] * 2), max_size=30))
def test_pareto_front_is_what_no_point_dominates(points: list[tuple[float, float]]) -> None:
    expected = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    assert pareto_front(points) == expected


def test_pareto_best_orders_by_the_first_objective_then_number() -> None:
    # Maximize both: trials 3 and 1 tie on the first objective; 2 is dominated by 1.
    by_trial = {10: (1, [5.0, 1.0]), 11: (2, [4.0, 0.0]), 12: (3, [5.0, 1.0]),
                13: (4, [1.0, 9.0])}
    assert pareto_best(by_trial, [True, True], 10) == [10, 12, 13]
    assert pareto_best(by_trial, [True, True], 1) == [10]
    # Minimize both: 11 and 13 win, listed by the first objective's value, largest first (as
    # `hpo best` always has, whatever the direction).
    assert pareto_best(by_trial, [False, False], 10) == [11, 13]


def test_record_keeps_the_summary_fields_and_times() -> None:
    start = datetime(2026, 12, 1, 10, 0, 0)
    attrs = {"train_seconds": 3.5, "val_curve": [1.0] * 100, "host": "a", "seeds": [1, 2]}
    r = record(4, "COMPLETE", [61.2], {"hidden_size": 32}, attrs, start,
               start + timedelta(seconds=90), NAMES[:1])
    assert r == {"number": 4, "state": "COMPLETE",
                 "values": {"% noise removed on validation": 61.2},
                 "params": {"hidden_size": 32}, "train_seconds": 3.5, "host": "a", "seeds": [1, 2],
                 "datetime_start": "2026-12-01T10:00:00",
                 "datetime_complete": "2026-12-01T10:01:30", "duration_seconds": 90.0}
    assert list(r)[4:7] == [k for k in SUMMARY_ATTRS if k in attrs]  # the vocabulary's order
    running = record(5, "RUNNING", None, {}, {}, start, None, NAMES)
    assert running["duration_seconds"] is None and running["datetime_complete"] is None
    assert running["values"] == dict.fromkeys(NAMES)  # every objective, as Optuna's CLI


def test_the_training_status_is_not_called_a_state() -> None:
    """A diverged trial's stored `status` is how its training ended, not a second state."""
    r = record(1, "PRUNED", None, {}, {"status": "diverged", "reason": "loss inf"}, None, None,
               NAMES[:1])
    assert r["state"] == "PRUNED" and r["training_ended"] == "diverged" and "status" not in r
    assert "status" not in SUMMARY_FIELDS and "training_ended" in SUMMARY_FIELDS


def test_objectives_are_named_as_optuna_names_them() -> None:
    assert objective_names(NAMES, 2) == NAMES
    # None stored, or not one distinct text per objective: Optuna's default, the index.
    for stored in (None, NAMES[:1], [*NAMES, "x"], ["a", "a"], ["a", 3], "ab", ["", "b"]):
        assert objective_names(stored, 2) == ["0", "1"], stored
    assert objective_names(None, 1) == ["0"]


def test_csv_headers_json_keys_and_table_headers_agree() -> None:
    """The objective is named by its metric name in all three, CSV flattening values and params
    as Optuna's trials_dataframe does (values_<name>, params_<name>)."""
    records = [record(0, "COMPLETE", [50.0, 2.5], {"lr": 0.01, "hidden_size": 8},
                      {"epochs_run": 3, "status": "completed"}, None, None, NAMES),
               record(1, "FAIL", None, {"lr": 0.1}, {"fail_reason": "x"}, None, None, NAMES)]
    head, *rows = list(csv.reader(io.StringIO(to_csv(records, ["lr", "hidden_size"], NAMES))))
    assert head == ["number", "state", *(f"values_{n}" for n in NAMES), "params_lr",
                    "params_hidden_size", *SUMMARY_FIELDS, *TIMES]
    assert rows[0][:6] == ["0", "COMPLETE", "50.0", "2.5", "0.01", "8"]
    assert rows[1][:5] == ["1", "FAIL", "", "", "0.1"]
    flat = {k for r in records for k in r if k not in ("values", "params")}
    assert flat <= set(head) and set(head) - set(TRIAL_FIELDS) == {
        *(f"values_{n}" for n in NAMES), "params_lr", "params_hidden_size"}
    console = Console(width=200, record=True)
    console.print(trials_table("t", records, ["val_removed", "train_seconds"], NAMES))
    text = console.export_text()
    header = text.splitlines()[2]
    for name in [*NAMES, "hidden_size", "lr", "epochs_run", "cpu_seconds", "state"]:
        assert f" {name} " in header, name
    assert "COMPLETE" in text and "FAIL" in text


def test_a_narrow_table_keeps_the_names_on_more_lines() -> None:
    records = [record(0, "COMPLETE", [44.9], {"hidden_size": 24, "shift": 5, "epochs": 30},
                      {"epochs_run": 30, "train_seconds": 0.9, "cpu_seconds": 0.9}, None, None,
                      NAMES[:1])]
    console = Console(width=80, record=True)
    console.print(trials_table("best", records, ["val_removed"]))  # names: hpo's own labels
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in "".join(lines)
    heads = " ".join(lines[1:5])
    for part in ("% noise removed", "on validation", "hidden_", "size", "epochs_", "run",
                 "train_", "seconds", "cpu_"):
        assert part in heads, part
    assert "44.90" in lines[-1]


def test_rescores_join_their_records() -> None:
    kept = {"4": {"number": 4, "val_mean": 60.0, "val_std": 0.5, "seeds": 3, "val_curves": 500}}
    rows = with_rescores(kept, [{"number": 4}, {"number": 5}])
    assert rows == [{"number": 4, "rescored": {"val_mean": 60.0, "val_std": 0.5, "seeds": 3,
                                               "val_curves": 500}}, {"number": 5}]
    assert with_rescores(None, [{"number": 1}]) == [{"number": 1}]
    assert pm(60.0, 0.5, 3) == "60.00 ± 0.50" and pm(60.0, 0.0, 1) == "60.00"
