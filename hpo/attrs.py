"""The study user attrs hpo writes: one home for their names, which both the Optuna-backed study
(hpo.study) and the SQLite reader (hpo.lightread) use, and which existing studies already hold."""

from __future__ import annotations

SPEC_ATTR = "hpo:spec"  # the study file's definition, as JSON
BUDGET_ATTR = "hpo:budget"  # finished trials the study asks for
RESCORE_ATTR = "hpo:rescored"  # `hpo rescore`: the top trials on more seeds and val curves
SUMMARY_ATTR = "hpo:summary"  # one readable line: what the dashboard shows first
