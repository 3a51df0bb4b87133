"""``alanet train``, ``alanet merge``, ``alanet evaluate`` and ``alanet compare``."""

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
    if finetune:  # the paper's form: frozen encoder, then a last end-to-end pass
        out["finetune"] = True
        out.setdefault("encoder", "frozen")
    return out


def parse_folds(text: str | None, no_final: bool) -> tuple[tuple[str, ...] | None, bool]:
    """``--folds P03,C07[,final]`` → (fold participants or None for every fold, train the final model?)."""
    if text is None:
        return None, not no_final
    ids = [t.strip() for t in text.split(",") if t.strip()]
    if not ids:
        raise InputError("--folds: no participant given (e.g. --folds P03,C07, or --folds final)")
    final = "final" in ids
    if final and no_final:
        raise InputError("--folds final asks for the final model, --no-final for none: choose one")
    return tuple(sorted({t for t in ids if t != "final"})), final


def cmd_train(args: argparse.Namespace) -> int:
    from alanet.train.data.loading import load_dataset
    from alanet.train.experiment import ExperimentConfig, validate

    out = Path(args.out)
    chief = True
    if args.distribute == "multiworker":
        from alanet.train.distributed import worker_task

        task = worker_task()
        chief = task.is_chief
    if chief and out.exists() and not args.force:
        raise InputError(f"{out}: run directory already exists (use --force to replace it)")
    dataset = load_dataset(args.data, args.format)
    tests = tuple(t.strip() for t in args.test_participants.split(",") if t.strip())
    folds, final = parse_folds(args.folds, args.no_final)
    cfg = ExperimentConfig(model=args.model, task=args.task, eval=args.eval, window=args.window, stride=args.stride,
                           epochs=args.epochs, ae_epochs=args.ae_epochs, seed=0 if args.seed is None else args.seed,
                           deterministic=args.seed is not None, jobs=args.jobs, test_participants=tests,
                           hparams=_hparams(args.hparam, args.finetune), distribute=args.distribute, final=final,
                           folds=folds, progress=not args.quiet, normalization=args.normalization,
                           prior_seconds=args.prior_seconds, warmup_seconds=args.warmup_seconds,
                           window_label=args.window_label)
    validate(cfg, dataset)
    result = train_run(cfg, dataset, out, force=args.force)
    m = result.metrics
    if "accuracy" in m:
        scores = (f"accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}, MCC {m['mcc']:.3f}, "
                  f"train {m['train_seconds']:.1f} s")
    else:
        scores = f"final model only, train {m.get('final_train_seconds', 0.0):.1f} s"
    where = f"→ {out}" if chief else f"(worker {task.index} of {task.workers}: the chief writes {out})"
    part = ""
    if folds is not None:
        held = [f"folds {','.join(f.plan.test[0] for f in result.folds)}"] if result.folds else []
        part = f" (part: {', '.join(held + (['final model'] if final else []))})"
    print(f"{cfg.model} {cfg.task} {cfg.eval}{part}: {scores} {where}")
    return 0


def training_settings(cfg) -> dict:
    """The settings that shape a run's numbers: what every worker of a multi-worker run must share."""
    from dataclasses import asdict

    out = asdict(cfg)
    for key in ("progress", "jobs", "distribute", "folds", "final"):
        out.pop(key, None)
    out["hparams"] = cfg.resolved_hparams()
    return out


def train_run(cfg, dataset, out: Path, force: bool = False):
    """Run the experiment and write the run directory (staged: nothing half-written).

    With ``--distribute multiworker`` every worker trains in lock-step and only the
    chief writes; the others wait until it has."""
    from alanet.train.experiment import run_experiment
    from alanet.train.windows import dataset_fingerprint

    fingerprint = dataset_fingerprint(dataset)
    if cfg.distribute != "multiworker":
        result = run_experiment(cfg, dataset)
        _write_run(out, result, dataset, fingerprint, force)
        return result

    from alanet.train import distributed
    from alanet.train.fit import configure_tensorflow, get_strategy

    task = distributed.worker_task()
    configure_tensorflow(deterministic=cfg.deterministic)  # before the strategy starts TensorFlow
    strategy = get_strategy("multiworker")
    distributed.check_same_inputs(strategy, distributed.inputs_digest(fingerprint, training_settings(cfg)))
    result = run_experiment(cfg, dataset)
    ok = False
    try:
        if task.is_chief:
            _write_run(out, result, dataset, fingerprint, force)
        ok = True
    finally:
        everyone = distributed.barrier(strategy, ok)
    if not everyone:
        raise InputError(f"{out}: the chief did not write the run directory (see its output)")
    return result


def _write_run(out: Path, result, dataset, fingerprint: str, force: bool) -> None:
    from alanet.train.report import write_report
    from alanet.train.rundir import write_run

    try:
        with atomic.staged_dir(out, force=force) as stage:
            write_run(stage, result, dataset, fingerprint)
            write_report(stage, result, dataset)
    except FileExistsError:
        raise InputError(f"{out}: run directory already exists (use --force to replace it)") from None


def evaluate_run(run_dir: str | Path, dataset) -> dict:
    """Score a run on ``dataset`` with the run's window, normalisation and class names."""
    from alanet.device.decisions import window_labels
    from alanet.device.features import schema_matches
    from alanet.device.windowing import WindowSpec
    from alanet.train.metrics import classification_metrics
    from alanet.train.rundir import load_run
    from alanet.train.windows import make_windows, normalise_windows

    run = load_run(run_dir)
    why = schema_matches(run.schema, dataset.schema)
    if why:
        raise InputError(f"{dataset.root or 'dataset'}: does not match the run's channel schema: {why}")
    tw = make_windows(dataset, run.task, WindowSpec(run.window, run.stride, label=run.window_label))
    names = run.label_names
    unknown = [n for n in tw.label_names if n not in names]
    present = set(np.unique(tw.y).tolist())
    bad = [tw.label_names[i] for i in present if tw.label_names[i] in unknown]
    if bad:
        raise InputError(f"{dataset.root or 'dataset'}: class(es) {', '.join(bad)} unknown to the run "
                         f"(knows {', '.join(names)})")
    remap = np.array([names.index(n) if n in names else -1 for n in tw.label_names])
    y = remap[tw.y]
    x = normalise_windows(tw, np.arange(len(tw)), dataset, run.normalizer)
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


def cmd_merge(args: argparse.Namespace) -> int:
    from alanet.train.merge import write_merged

    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"{out}: run directory already exists (use --force to replace it)")
    result = write_merged(args.runs, out, force=args.force, partial=args.partial)
    m = result.metrics
    n, of = len(result.folds), len(result.fold_participants)
    folds = f"{n} folds" if n == of else f"{n} of {of} folds (a part: merge the others in later)"
    final = "with the final model" if result.final is not None else "no final model (train it with --folds final)"
    print(f"{result.config.model} {result.config.task} loso: {folds} from {len(args.runs)} runs, {final}: "
          f"accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}, MCC {m['mcc']:.3f} → {out}")
    return 0
