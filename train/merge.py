"""``alanet merge``: the parts of one leave-one-subject-out experiment → the complete run.

A cluster scheduler runs the folds of a LOSO experiment as separate jobs
(``alanet train ... --eval loso --folds P03``; the final model: ``--folds final``),
each into its own run directory. Every part stores its folds' test predictions
(``folds.npz``), so merging pools them exactly as a full run does (the same
:func:`~alanet.train.experiment.pooled_metrics`) and writes the same layout:
config, normalisation, parity windows, metrics, history, report and, when one part
holds it, the final model.

Parts must come from the same data (fingerprint) and the same settings (model, task,
window, stride, hyperparameters, seed, ...); every fold must be present exactly once
(``partial=True`` accepts a set with folds missing: the result is then itself a part,
which a later merge completes). Anything else is refused with one line naming the run
directory and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alanet.device.features import Normalizer
from alanet.device.schema import Schema
from alanet.device.windowing import DEFAULT_WINDOW_LABEL
from alanet.errors import InputError
from alanet.train.rundir import CONFIG, FOLDS, HISTORY, METRICS, NORMALIZATION, PARITY, read_fold_records

# What every part must share: the data and the settings that shape the numbers.
SAME = ("data_fingerprint", "model", "task", "label_names", "schema", "window", "stride", "groups", "hparams", "seed",
        "deterministic", "participants", "fold_participants", "format", "normalization", "prior_seconds",
        "warmup_seconds", "window_label")
DEFAULTS = {"window_label": DEFAULT_WINDOW_LABEL}  # what a part written before a setting existed used


@dataclass(frozen=True)
class Part:
    """One run directory to merge: its config and folds."""

    path: Path
    config: dict[str, Any]
    folds: list  # FoldResult
    has_final: bool


@dataclass(frozen=True)
class DataSummary:
    """What the run directory and its report record of the dataset (the parts' data is not read again)."""

    schema: Schema
    participants: list[str]
    format: str
    root: str | None
    fingerprint: str


def read_part(run_dir: str | Path) -> Part:
    """A LOSO run directory (whole or part), or InputError naming what is missing."""
    path = Path(run_dir)
    if not (path / CONFIG).is_file():
        raise InputError(f"{path}: not a run directory (no {CONFIG})")
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path / CONFIG}: unreadable ({exc})") from None
    if config.get("eval") != "loso" or "fold_participants" not in config or not (path / FOLDS).is_file():
        raise InputError(f"{path}: not a leave-one-subject-out run with fold records ({FOLDS}); "
                         f"train the parts with `alanet train --eval loso --folds ...`")
    return Part(path, config, read_fold_records(path), bool(config.get("final_model")))


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def check_parts(parts: Sequence[Part], partial: bool = False) -> None:
    """Refuse parts of different experiments, a run or a fold twice, a missing fold
    (unless ``partial``), two final models."""
    first = parts[0]
    seen: set[Path] = set()
    for part in parts:
        if part.path.resolve() in seen:
            raise InputError(f"{part.path}: run directory given twice")
        seen.add(part.path.resolve())
    for part in parts[1:]:
        for key in SAME:
            if key == "data_fingerprint" and part.config.get(key) != first.config.get(key):
                raise InputError(f"{part.path}: trained on other data than {first.path} (data_fingerprint "
                                 f"{str(part.config.get(key))[:12]}… vs {str(first.config.get(key))[:12]}…)")
            mine, theirs = part.config.get(key, DEFAULTS.get(key)), first.config.get(key, DEFAULTS.get(key))
            if mine != theirs:
                raise InputError(f"{part.path}: {key} differs from {first.path} ({_short(mine)} vs {_short(theirs)})")
    where: dict[str, Path] = {}
    for part in parts:
        for fold in part.folds:
            test = fold.plan.test[0]
            if test in where:
                raise InputError(f"{part.path}: the fold holding out {test} is also in {where[test]}")
            where[test] = part.path
    if not where:
        raise InputError(f"{first.path}: no fold in {'this run' if len(parts) == 1 else 'these runs'} "
                         f"(only a final model): nothing to pool")
    missing = [p for p in first.config["fold_participants"] if p not in where]
    if missing and not partial:
        raise InputError(f"folds missing: {', '.join(missing)} (the runs hold {', '.join(sorted(where))}); "
                         f"run them with --folds {','.join(missing)}, or merge what there is with --partial")
    finals = [p.path for p in parts if p.has_final]
    if len(finals) > 1:
        raise InputError(f"{finals[1]}: a final model is also in {finals[0]}; merge one")


def _final_model(part: Part):
    """The part's final model (with its history and training time) as a FitResult."""
    from alanet.train.fit import FitResult
    from alanet.train.rundir import load_run

    run = load_run(part.path)
    if run.is_classic:
        from alanet.train.models.classic import n_params as classic_params

        model = run.load_classic()
        n_params = int(classic_params(model))
    else:
        from alanet.train.fit import configure_tensorflow

        configure_tensorflow()
        model = run.load_model()
        n_params = int(model.count_params())
    history = json.loads((part.path / HISTORY).read_text()).get("final", {})
    metrics = json.loads((part.path / METRICS).read_text())
    return FitResult(run.model_name, model, history, float(metrics.get("final_train_seconds", 0.0)), n_params)


def merge_runs(run_dirs: Sequence[str | Path], partial: bool = False):
    """Merge LOSO parts into the complete run (in memory): an ExperimentResult, a
    summary of the data for :func:`write_run` / :func:`write_report`, and the entries
    of config.json the merge sets. With ``partial``, folds may be missing: the result
    is a part that holds every fold given."""
    from alanet.train.experiment import ExperimentConfig, ExperimentResult, _examples, pooled_metrics

    parts = [read_part(d) for d in run_dirs]
    check_parts(parts, partial)
    first = parts[0]
    c = first.config
    order = {p: i for i, p in enumerate(c["fold_participants"])}
    folds = sorted((f for part in parts for f in part.folds), key=lambda f: order[f.plan.test[0]])
    metrics = pooled_metrics(folds, len(c["label_names"]))
    final, decision = None, {}
    holder = next((p for p in parts if p.has_final), None)
    if holder is not None:
        final = _final_model(holder)
        decision = dict(holder.config.get("decision") or {})
        stored = json.loads((holder.path / METRICS).read_text())
        metrics["final_train_seconds"] = stored.get("final_train_seconds", final.train_seconds)
        metrics["final_decision"] = stored.get("final_decision", decision)
    schema = Schema.from_dict(c["schema"])
    # (the parts share their normalisation settings: SAME; the final model's part has its statistics)
    normalizer = Normalizer.from_dict(json.loads(((holder or first).path / NORMALIZATION).read_text()),
                                      schema.n_channels)
    with np.load(first.path / PARITY) as z:
        calib_x, test_x, test_y = z["calib_x"], z["test_x"], z["test_y"]
    ex = _examples(test_y, np.arange(len(test_y)), 8)  # the windows a full run plots (a subset of test_x)
    held = tuple(f.plan.test[0] for f in folds)
    cfg = ExperimentConfig(model=c["model"], task=c["task"], eval="loso", window=int(c["window"]),
                           stride=int(c["stride"]), seed=int(c["seed"]), deterministic=bool(c.get("deterministic")),
                           hparams=dict(c["hparams"]), distribute=c.get("distribute"), final=final is not None,
                           folds=None if len(held) == len(order) else held, progress=False,
                           normalization=normalizer.mode, window_label=str(c.get("window_label", DEFAULT_WINDOW_LABEL)))
    names = ", ".join(str(p.path) for p in parts)
    notes = (f"Merged by `alanet merge` from {len(parts)} runs: {names}.",)
    if any(p.config.get("versions") != c.get("versions") for p in parts):
        notes += ("The parts were trained with different library versions (see their config.json).",)
    result = ExperimentResult(cfg, dict(c["hparams"]), tuple(c["label_names"]), [list(g) for g in c["groups"]],
                              folds, metrics, final, decision, normalizer, (), calib_x, test_x, test_y,
                              test_x[ex], test_y[ex], parity_held_out=False,
                              fold_participants=tuple(c["fold_participants"]), notes=notes)
    data = DataSummary(schema, list(c["participants"]), str(c["format"]), c.get("data_root"), c["data_fingerprint"])
    overrides = {"versions": c.get("versions"), "merged_from": [str(p.path) for p in parts]}
    return result, data, overrides


def write_merged(run_dirs: Sequence[str | Path], out: str | Path, force: bool = False, partial: bool = False):
    """Merge ``run_dirs`` and write the complete run (with ``partial``: what there is)
    to ``out`` (staged: nothing half-written)."""
    from alanet import atomic
    from alanet.train.report import write_report
    from alanet.train.rundir import write_run

    result, data, overrides = merge_runs(run_dirs, partial)
    try:
        with atomic.staged_dir(out, force=force) as stage:
            write_run(stage, result, data, data.fingerprint, overrides)
            write_report(stage, result, data)
    except FileExistsError:
        raise InputError(f"{out}: run directory already exists (use --force to replace it)") from None
    return result

