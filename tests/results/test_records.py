"""hpo.results.records: one record per trial for every command, and the Pareto front without
numpy."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from hpo.results.records import SUMMARY_ATTRS, pareto_best, pareto_front, pm, record, with_rescores


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
               start + timedelta(seconds=90))
    assert r == {"number": 4, "state": "complete", "values": [61.2], "params": {"hidden_size": 32},
                 "train_seconds": 3.5, "host": "a", "seeds": [1, 2],
                 "datetime_start": "2026-12-01T10:00:00",
                 "datetime_complete": "2026-12-01T10:01:30", "duration_seconds": 90.0}
    assert list(r)[4:7] == [k for k in SUMMARY_ATTRS if k in attrs]  # the vocabulary's order
    running = record(5, "RUNNING", None, {}, {}, start, None)
    assert running["duration_seconds"] is None and running["datetime_complete"] is None


def test_rescores_join_their_records() -> None:
    kept = {"4": {"number": 4, "val_mean": 60.0, "val_std": 0.5, "seeds": 3, "val_curves": 500}}
    rows = with_rescores(kept, [{"number": 4}, {"number": 5}])
    assert rows == [{"number": 4, "rescored": {"val_mean": 60.0, "val_std": 0.5, "seeds": 3,
                                               "val_curves": 500}}, {"number": 5}]
    assert with_rescores(None, [{"number": 1}]) == [{"number": 1}]
    assert pm(60.0, 0.5, 3) == "60.00 ± 0.50" and pm(60.0, 0.0, 1) == "60.00"
