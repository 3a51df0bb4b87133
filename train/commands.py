"""``alanet train``, ``alanet evaluate`` and ``alanet compare``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from alanet import atomic
from alanet.errors import InputError
from alanet.options import parse_assignments


def _hparams(pairs: list[str], finetune: bool) -> dict:
    out = parse_assignments(pairs, "--hparam")
    if finetune:
        out["finetune"] = True
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from alanet.train.data.loading import load_dataset
    from alanet.train.experiment import ExperimentConfig, validate

    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"{out}: run directory already exists (use --force to replace it)")
    dataset = load_dataset(args.data, args.format)
    tests = tuple(t.strip() for t in args.test_participants.split(",") if t.strip())
    cfg = ExperimentConfig(model=args.model, task=args.task, eval=args.eval, window=args.window, stride=args.stride,
                           epochs=args.epochs, ae_epochs=args.ae_epochs, seed=args.seed, jobs=args.jobs,
                           test_participants=tests, hparams=_hparams(args.hparam, args.finetune),
                           distribute=args.distribute, final=not args.no_final, progress=not args.quiet)
    validate(cfg, dataset)
    result = train_run(cfg, dataset, out, force=args.force)
    m = result.metrics
    print(f"{cfg.model} {cfg.task} {cfg.eval}: accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}, "
          f"MCC {m['mcc']:.3f}, train {m['train_seconds']:.1f} s → {out}")
    return 0


def train_run(cfg, dataset, out: Path, force: bool = False):
    """Run the experiment and write the run directory (staged: nothing half-written)."""
    from alanet.train.experiment import run_experiment
    from alanet.train.report import write_report
    from alanet.train.rundir import write_run
    from alanet.train.windows import dataset_fingerprint

    result = run_experiment(cfg, dataset)
    try:
        with atomic.staged_dir(out, force=force) as stage:
            write_run(stage, result, dataset, dataset_fingerprint(dataset))
            write_report(stage, result, dataset)
    except FileExistsError:
        raise InputError(f"{out}: run directory already exists (use --force to replace it)") from None
    return result


def evaluate_run(run_dir: str | Path, dataset) -> dict:
    """Score a run on ``dataset`` with the run's window, normalisation and class names."""
    from alanet.device.decisions import window_labels
    from alanet.device.features import schema_matches
    from alanet.device.windowing import WindowSpec
    from alanet.train.metrics import classification_metrics
    from alanet.train.rundir import load_run
    from alanet.train.windows import make_windows, normalise

    run = load_run(run_dir)
    why = schema_matches(run.schema, dataset.schema)
    if why:
        raise InputError(f"{dataset.root or 'dataset'}: does not match the run's channel schema: {why}")
    tw = make_windows(dataset, run.task, WindowSpec(run.window, run.stride))
    names = run.label_names
    unknown = [n for n in tw.label_names if n not in names]
    present = set(np.unique(tw.y).tolist())
    bad = [tw.label_names[i] for i in present if tw.label_names[i] in unknown]
    if bad:
        raise InputError(f"{dataset.root or 'dataset'}: class(es) {', '.join(bad)} unknown to the run "
                         f"(knows {', '.join(names)})")
    remap = np.array([names.index(n) if n in names else -1 for n in tw.label_names])
    y = remap[tw.y]
    x = normalise(tw.x, tw.mask, run.normalizer)
    if run.is_classic:
        from alanet.train.fit import classic_proba
        from alanet.train.models.classic import window_statistics

        proba = classic_proba(run.load_classic(), window_statistics(x, tw.mask))
    else:
        from alanet.train.fit import configure_tensorflow, keras_proba

        configure_tensorflow()
        proba = keras_proba(run.load_model(), x, tw.mask)
    keep = y >= 0
    metrics = classification_metrics(y[keep], window_labels(proba[keep], run.decision), len(names), proba[keep])
    metrics.update(run=str(run.path), data=str(dataset.root), participants=dataset.participants,
                   decision=run.decision)
    return metrics


def cmd_evaluate(args: argparse.Namespace) -> int:
    from alanet.train.data.loading import load_dataset

    from alanet.train.rundir import load_run

    load_run(args.run)  # a bad run directory fails before the data is read
    metrics = evaluate_run(args.run, load_dataset(args.data, args.format))
    text = json.dumps(metrics, indent=2) + "\n"
    if args.out:
        atomic.write_text(args.out, text)
    sys.stdout.write(text)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from alanet.train.report import comparison_table

    table = comparison_table(args.runs)
    if args.out:
        atomic.write_text(args.out, table)
    sys.stdout.write(table)
    return 0
