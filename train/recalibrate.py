"""Choose a kept run's alert rule again, without training it again.

The deployed model of a run directory, its window threshold and its normalisation stay
as they are; the alert rule (smoothing, raise/clear thresholds, minimum durations, and
the warm-up) is chosen again by :func:`alanet.train.calibrate.calibrate_stream` on the
same validation participants' recordings played as streams, exactly as ``alanet train``
chose it. For a run trained before the rule gained a setting (``warmup_s``), or to try
another warm-up on the same model.

The validation participants are the ones the run's own split chose (same settings, same
data: the data's fingerprint must match the run's). A run whose model was trained again
on fitting + validation windows (``refit``) is refused: its model has seen them.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from alanet import atomic
from alanet.errors import InputError
from alanet.train.calibrate import Stream, calibrate_stream
from alanet.train.data.recording import Dataset

NOTE = "; alert rule"  # where the stream calibration's note starts in a decision's ``calibration``


def recalibrate_alert_rule(run_dir: str | Path, dataset: Dataset, warmup_s: float | None = None) -> dict[str, Any]:
    """The run's decision with its alert rule chosen again on its validation streams.

    ``warmup_s``: the warm-up the rule is chosen with (default: the run's own, none for a
    run that had none). InputError when the run or the data cannot give the same
    validation streams the run was calibrated on.
    """
    from alanet.train.rundir import load_run

    run = load_run(run_dir)
    streams = run_validation_streams(run, dataset)
    base = window_decision(run.decision, warmup_s)
    return calibrate_stream(streams, base, run.task, [str(i) for i in range(len(run.label_names))])


RULE_KEYS = ("smoothing_alpha", "raise_threshold", "clear_threshold", "min_raise_windows", "min_clear_windows",
             "warmup_s")


def window_decision(decision: dict[str, Any], warmup_s: float | None = None) -> dict[str, Any]:
    """``decision`` without its alert rule: the window decision (class, threshold, class weights,
    names) and the calibration note up to the rule's, plus the warm-up a new rule is to be chosen
    with (``warmup_s``; default the decision's own)."""
    base = {k: v for k, v in decision.items() if k not in RULE_KEYS}
    base["calibration"] = str(decision.get("calibration", "")).split(NOTE)[0]
    w = float(decision.get("warmup_s", 0.0)) if warmup_s is None else float(warmup_s)
    if w > 0:
        base["warmup_s"] = w
    return base


def run_validation_streams(run: Any, dataset: Dataset) -> list[Stream]:
    """The deployed model's probabilities on the validation participants' recordings of a
    run (a :class:`alanet.train.rundir.Run`), cut and normalised as in training."""
    from alanet.train.experiment import ExperimentConfig, deployed_plan, validation_streams
    from alanet.train.fit import configure_tensorflow, keras_proba
    from alanet.train.windows import dataset_fingerprint, make_windows

    c = run.config
    dec = run.decision
    if dec.get("window_threshold") is None:
        raise InputError(f"{run.path}/config.json: field decision has no window_threshold (a two-class run "
                         f"calibrated in training); there is no alert rule to choose again")
    if "refit" in (run.metrics().get("selection") or {}):
        raise InputError(f"{run.path}: its model was trained again on its validation participants (refit); "
                         f"an alert rule chosen on them now would be chosen on seen data")
    if c.get("data_fingerprint") != dataset_fingerprint(dataset):
        raise InputError(f"{dataset.root or 'dataset'}: not the data the run {run.path} was trained on "
                         f"(its fingerprint differs from config.json's data_fingerprint)")
    fs = float(run.schema.sample_rate_hz)
    cfg = ExperimentConfig(model=run.model_name, task=run.task, eval=str(c.get("eval", "holdout")),
                           window=run.window, stride=run.stride, seed=int(c.get("seed", 0)),
                           test_participants=tuple(c.get("test_participants") or ()), progress=False,
                           window_label=run.window_label)
    tw = make_windows(dataset, cfg.task, cfg.window_spec())
    plan = deployed_plan(cfg, dataset, tw)
    named = re.search(r"validation participants ([\w,.-]+)", str(dec.get("calibration", "")))
    if named and tuple(named.group(1).split(",")) != plan.val:
        raise InputError(f"{run.path}: its decision was calibrated on {named.group(1)}, the split gives "
                         f"{','.join(plan.val) or 'none'}; not the same validation participants")
    cut = validation_streams(dataset, cfg, plan.val, run.normalizer)
    if not cut:
        raise InputError(f"{run.path}: no validation recording to play as a stream")
    configure_tensorflow(deterministic=bool(c.get("deterministic")))
    model = run.load_model()
    return [Stream(keras_proba(model, w, np.ones(w.shape[:2], bool)), st, lab, cfg.window, fs) for w, st, lab in cut]


def write_recalibrated(run_dir: str | Path, out: str | Path, decision: dict[str, Any], force: bool = False) -> Path:
    """A copy of the run at ``out`` whose config.json and metrics.json carry ``decision``."""
    src, out = Path(run_dir), Path(out)
    if out.exists() and not force:
        raise InputError(f"{out}: already exists (use --force to replace it)")
    try:
        with atomic.staged_dir(out, force=force) as stage:
            shutil.copytree(src, stage, dirs_exist_ok=True)
            for name in ("config.json", "metrics.json"):
                p = stage / name
                if p.is_file():
                    d = json.loads(p.read_text())
                    if name == "config.json" or "decision" in d:
                        d["decision"] = decision
                    p.write_text(json.dumps(d, indent=2) + "\n")
    except FileExistsError:
        raise InputError(f"{out}: already exists (use --force to replace it)") from None
    return out
