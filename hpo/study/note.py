"""The study's note in optuna-dashboard: what is being tuned and what the numbers mean.

Written once, when a study is created, so that whoever opens the dashboard sees the task, the
data protocol of this study, its settings and the numbers a trial should be compared with (the
report's hand-tuned table and classical baselines on this study's own validation and test
curves) without leaving the page.

The note is what a person reads: optuna-dashboard shows the study's user attrs (`hpo:spec`, the
same settings as JSON for programs) as raw JSON, stored values with every digit, and labels two
of its plots "Objective Value" whatever the study's metric names. So the note lists the settings
in a table, shows every number rounded (`shown`), keeps its tables to short cells, and ends with
a key to the dashboard's own labels. The stored attrs keep their formats: only this text is
written to be read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hpo.errors import plural
from hpo.study.metrics import METRIC_LABELS
from hpo.study.spec import TUNABLE, StudySpec
from hpo.task.baselines import Baseline, compute_baselines
from hpo.task.config import TrainConfig
from hpo.task.curves import DataConfig
from hpo.task.datafile import FileData
from hpo.task.source import noise_source

# docs/protocol.md: the report's table (validation split, one run each, lr 0.01, batch 10).
REPORT_TABLE: tuple[tuple[str, int, int, int, float], ...] = (
    ("initial", 40, 10, 100, 58.51),
    ("more epochs", 40, 10, 200, 59.45),
    ("smaller hidden", 20, 10, 100, 53.80),
    ("larger hidden", 60, 10, 100, 57.76),
    ("smaller shift", 40, 3, 100, 56.64),
)
MAX_POINTS = 20  # listed points of a `points` study; the rest are counted
SIGNIFICANT = 4  # digits of a float shown in the note (0.00123, 56.93)


def shown(v: Any) -> str:
    """A setting's value for reading: floats to SIGNIFICANT digits (never 0.30000000000000004),
    booleans as yes/no, lists joined; every other value as it prints."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{SIGNIFICANT}g}"
    if isinstance(v, list | tuple):
        return ", ".join(map(shown, v))
    return str(v)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _options(kind: str, options: Mapping[str, Any]) -> str:
    opts = ", ".join(f"{k} {shown(v)}" for k, v in options.items())
    return f"{kind}: {opts}" if opts else kind


def _space(spec: StudySpec) -> str:
    rows = []
    for p in spec.space:
        if p.type == "categorical":
            rows.append(f"| {p.name} | one of {_cell(shown(list(p.choices)))} |")
        else:
            extra = " (log)" if p.log else (f" (step {shown(p.step)})" if p.step else "")
            rows.append(f"| {p.name} | {shown(p.low)} to {shown(p.high)}{extra} |")
    return "\n".join(["| parameter | range |", "|---|---|", *rows]) if rows else "(no space)"


def _data(cfg: DataConfig, spec: StudySpec) -> str:
    train = f"{cfg.n_train}"
    if any(p.name == "train_curves" for p in spec.space):
        train = "searched (`train_curves`)"
    return (f"- **Data seed {cfg.seed}**: training curves {train}, validation {cfg.n_val} "
            f"(what the search optimizes), held-out test {cfg.n_test} (never seen by a "
            f"search).\n- Noise: Gaussian, std = {cfg.noise_ratio:g} x (max - min) of each "
            f"clean curve; {cfg.length} points on [0, {cfg.x_max:g}], 1 to {cfg.max_sines} "
            "sines per curve.")


def _file(fd: FileData) -> str:
    tr, va, te = fd.sizes()
    shares = ("counts from the study file" if fd.counts is not None else
              "/".join(f"{100 * f:g}" for f in fd.fractions) + " % of the file's signals")
    norm = ("**normalized**: the model reads each signal shifted and scaled by its own noisy "
            "input's mean and standard deviation, and its outputs are mapped back; every score "
            "is on the original scale" if fd.normalize else
            "not normalized: the model reads the signals as they are")
    return (f"- **Data file** `{fd.path}` (sha256 `{fd.sha256[:12]}`...), {fd.shape[0]} signals "
            f"of {fd.shape[1]} points; every worker checks the hash before it trains.\n"
            f"- **Splits** (rows shuffled by data seed {fd.seed}; {shares}): training {tr}, "
            f"validation {va} (what the search optimizes), held-out test {te} (never seen by "
            f"a search).\n- Noise: {noise_source(fd)}.\n- Scale: {norm}.")


def _baselines(bs: tuple[Baseline, ...]) -> str:
    rows = [f"| {b.describe()} | {b.val_removed:.2f} | {b.test_removed:.2f} |" for b in bs]
    return "\n".join(["| classical denoiser (chosen on validation) | validation % | test % |",
                      "|---|---|---|", *rows])


def study_note(spec: StudySpec, baselines: tuple[Baseline, ...] | None = None) -> str:
    """The note's markdown; baselines are computed on the study's own data unless given."""
    source = spec.source()
    bs = baselines if baselines is not None else compute_baselines(source)
    data = _data(source, spec) if isinstance(source, DataConfig) else _file(source)
    reference = (_synthetic_reference(spec, bs) if isinstance(source, DataConfig) else
                 _file_reference(spec, bs))
    objective = " and ".join(f"{spec.directions[i]} `{m}` ({METRIC_LABELS[m]})"
                             for i, m in enumerate(spec.metrics))
    fixed = _fixed_training(spec)
    return f"""# {spec.name}

{spec.description or "An hpo study of the LSTM noise-removal task."}

- **Objective**: {objective}.
- **Intermediate values**: {_steps(spec)}

**Score**: percent of noise removed, `100 * (1 - sum|clean - output| / sum|clean - noisy|)`
(0 when negative), over every point of every validation curve; objective: {objective};
{plural(spec.repeats, 'training seed')} per trial, averaged.

## Protocol
- Model: two stacked LSTMs (1 -> H -> H) and a linear head; the first LSTM looks `shift` steps
  ahead. Adam (lr {fixed.get("lr", "searched")}), cosine annealing over the run's epochs, MSE
  against the clean curve, {_batches(fixed)} in order.
{data}

## Search space
{_space(spec)}

## Settings
{_settings(spec, fixed)}

{reference}
## Artifacts
Each complete trial carries a picture (three validation curves: clean, noisy, denoised; and its
learning curve) and its model file. `hpo export {spec.name} --out model.pt` downloads the best
model; `hpo denoise --model model.pt ...` uses it.

{_reading(spec)}"""


def _batches(fixed: Mapping[str, str]) -> str:
    size = fixed.get("batch_size")
    return f"batches of {size} curves" if size is not None else "batches of a searched size"


def _reports(spec: StudySpec) -> bool:
    """Whether trials report intermediate values: validation scores, only when that is the one
    objective (hpo.run.objective)."""
    return spec.metrics == ("val_removed",)


def _steps(spec: StudySpec) -> str:
    if not _reports(spec):
        return ("none: they are validation scores, reported only when that is the study's one "
                "objective. Each trial's learning curve is in its picture, its `learning_curve` "
                "attr (21 points) and its `-curves.json` artifact (every epoch).")
    return """validation scores at the dashboard's "Step", which is the **percent of each
  trial's own schedule** (10, 20, ..., 100), not an epoch number: trials of different lengths
  compare at equal progress. Each trial's learning curve is in its picture, its `learning_curve`
  attr (21 points) and its `-curves.json` artifact (every epoch)."""


def _fixed_training(spec: StudySpec) -> dict[str, str]:
    """Each training setting no trial searches, as shown: the study file's or hpo's default."""
    searched = {p.name for p in spec.space}
    defaults = TrainConfig()
    return {k: shown(spec.train.get(k, getattr(defaults, k))) for k in TUNABLE
            if k not in searched and hasattr(defaults, k)}


def _settings(spec: StudySpec, fixed: Mapping[str, str]) -> str:
    """The rest of the stored definition (`hpo:spec`), one short row each."""
    training = ", ".join(f"{k} {v}" + (" (study file)" if k in spec.train else "")
                         for k, v in fixed.items())
    rows = [
        ("budget", f"{spec.trials} finished trials at creation (now: `hpo:budget`)"),
        ("seeds", f"study seed {spec.seed}; {plural(spec.repeats, 'training seed')} per trial"),
        ("sampler", _options(spec.sampler.kind, spec.sampler.options)
         + (f", {plural(len(spec.sampler.points), 'point')}, listed below" if spec.sampler.points
            else "")),
        ("pruner", _options(spec.pruner.kind, spec.pruner.options)
         + (" (steps are percent of each trial's schedule)" if spec.pruner.active else "")),
        ("fixed training", training or "none: all searched"),
    ]
    lines = ["| setting | value |", "|---|---|",
             *(f"| {k} | {_cell(v)} |" for k, v in rows)]
    if spec.sampler.points:
        names = list(dict.fromkeys(k for pt in spec.sampler.points for k in pt))
        shown_points = spec.sampler.points[:MAX_POINTS]
        lines += ["", "| point | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names),
                  *(f"| {i} | " + " | ".join(_cell(shown(pt.get(n, ""))) for n in names) + " |"
                    for i, pt in enumerate(shown_points))]
        if len(spec.sampler.points) > MAX_POINTS:
            lines.append(f"\n... and {len(spec.sampler.points) - MAX_POINTS} more points.")
    return "\n".join(lines)


def _reading(spec: StudySpec) -> str:
    """What optuna-dashboard's own labels and formats mean for this study."""
    labels = [METRIC_LABELS[m] for m in spec.metrics]
    if len(labels) == 1:
        plots = 'slice and "Intermediate values" plots label their axis' if _reports(spec) \
            else "slice plot labels its axis"
        objective_value = (f'The {plots} "Objective Value" (optuna-dashboard\'s fixed label): '
                           f"it is **{labels[0]}**, as History names it.")
    else:
        objective_value = ('The slice plot labels its axis "Objective Value" '
                           "(optuna-dashboard's fixed label): it is the objective picked in its "
                           f"menu, **{labels[0]}** or **{labels[1]}**.")
    return f"""## Reading the dashboard
- {objective_value}
- Values are shown as stored, with every digit the computation gave: read them to two
  decimals (`hpo best {spec.name}` prints them so). One configuration's runs vary by about 2
  points; the digits past the second decimal mean nothing.
- Study user attributes: `hpo:spec` is this note's settings as JSON (for programs),
  `hpo:budget` the current budget, `hpo:summary` the study in one line, `hpo:heartbeat` how
  often workers show they are alive; `hpo:rescored` and `hpo:evaluation`, once there, hold
  what `hpo rescore` and `hpo evaluate` measured.
- Trial user attributes: `model_val_removed` is what the trial's model file scores on
  validation; `learning_curve` is its curve as JSON (its picture draws it).
"""


def _synthetic_reference(spec: StudySpec, bs: tuple[Baseline, ...]) -> str:
    table = "\n".join(f"| {n} | {h} | {s} | {e} | {v:.2f} |" for n, h, s, e, v in REPORT_TABLE)
    return f"""## Reference numbers
The report's hand-tuned table (data seed of the exercise, validation split, one run each):

| configuration | hidden | shift | epochs | noise removed (%) |
|---|---|---|---|---|
{table}

Classical baselines on **this study's** curves (`hpo baselines --study {spec.name}`):

{_baselines(bs)}

A plain LSTM at H=40, shift 10, 100 epochs removes 55-58 % depending on its seed (single runs
vary by +-2 points). Fitting the true family of 1-3 sines removes about 73 %, about 77 % with the
true frequencies known: no denoiser should be expected beyond that.
"""


def _file_reference(spec: StudySpec, bs: tuple[Baseline, ...]) -> str:
    return f"""## Reference numbers
Classical baselines on **this study's** signals, on their original scale (`hpo baselines
--study {spec.name}`): the numbers a trial has to beat. The report's table and the reference
numbers of the synthetic sines do not apply to your own signals.

{_baselines(bs)}
"""


def summary_line(spec: StudySpec) -> str:
    """What is tuned and how, in one line, for the dashboard's first screen."""
    space = ", ".join(p.name for p in spec.space)
    goal = " and ".join(f"{spec.directions[i]} {METRIC_LABELS[m]}"
                        for i, m in enumerate(spec.metrics))
    return (f"{goal}; searching {space} with {spec.sampler.kind} sampling"
            f"{'' if not spec.pruner.active else f' and {spec.pruner.kind} pruning'}; "
            f"{plural(spec.repeats, 'seed')} per trial; intermediate values are reported at 10, "
            "20, ..., 100 percent of each trial's own schedule (the dashboard's 'Step')")
