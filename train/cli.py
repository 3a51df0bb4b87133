"""Subcommands of alanet.train: ``data`` (synth, check), ``train``, ``merge``, ``evaluate``, ``compare``.

Argparse only here; implementations are imported lazily.
"""

from __future__ import annotations

import argparse

from alanet.main import lazy
from alanet.train.data import cli as data_cli

MODELS = ("alanet", "alanet-parts", "banet", "stacked-lstm", "knn", "svm", "rf")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the ``alanet`` parser."""
    data_cli.register(sub)

    p = sub.add_parser("train", help="train and evaluate a model (hold-out or LOSO) into a run directory",
                       description="Train ALANet or a baseline on a dataset, evaluate it leak-free (hold-out or "
                       "leave-one-subject-out) and write a self-describing run directory.")
    p.add_argument("--data", required=True, help="dataset folder (EmoPain .mat/.csv or generic CSV)")
    p.add_argument("--format", choices=("emopain", "csv"), help="dataset format (default: detect)")
    p.add_argument("--task", required=True, help="protective | pain (EmoPain) | label (CSV)")
    p.add_argument("--model", required=True, help=f"one of {', '.join(MODELS)}")
    p.add_argument("--eval", default="holdout", help="holdout (default) | loso")
    p.add_argument("--test-participants", default="", help="hold-out test ids, comma-separated "
                   "(default: EmoPain challenge split, else a seeded quarter)")
    p.add_argument("--window", type=int, default=180, help="window length in frames (default 180)")
    p.add_argument("--stride", type=int, default=45, help="window stride in frames (default 45)")
    p.add_argument("--epochs", type=int, help="epochs of every training stage, exactly (turns the optimizer-step "
                   "floors off; default: the model's budget)")
    p.add_argument("--ae-epochs", type=int, help="ALANet autoencoder epochs (default: --epochs, else the model's)")
    p.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter (JSON value), e.g. --hparam units=16 --hparam finetune=true")
    p.add_argument("--finetune", action="store_true", help="ALANet in the paper's form (implies --hparam encoder=frozen): "
                   "fine-tune encoder + head end to end at the end, kept only when it does better on validation")
    p.add_argument("--seed", type=int, help="random seed (default 0); given explicitly, TensorFlow ops are also "
                   "made deterministic, so a rerun gives the same weights")
    p.add_argument("--normalization", choices=("auto", "population", "per-wearer"), default="auto",
                   help="population: the training participants' statistics for everyone; per-wearer: each "
                        "wearer's own running statistics, starting from the population's (the gateway does the "
                        "same per wearer); auto (default): per-wearer for protective behaviour on EmoPain-format "
                        "data, population for pain level and for generic CSV (see docs/training.md)")
    p.add_argument("--prior-seconds", type=float, default=60.0,
                   help="per-wearer: weight of the population statistics, in seconds of stream (default 60)")
    p.add_argument("--warmup-seconds", type=float, default=0.0,
                   help="protective behaviour: no alert is raised while less than this much of a wearer's stream "
                        "lies behind a window (the alert rule is chosen with it; default 0: measured, a warm-up "
                        "costs more episodes than false alarms, see docs/training.md)")
    p.add_argument("--window-label", choices=("majority", "newest"), default="majority",
                   help="how a training window is labelled: majority (default; the paper's) = the majority of its "
                        "frames; newest = the majority of its last --stride frames, those it adds to the window "
                        "before it (measured on synthetic streams: docs/training.md)")
    p.add_argument("--jobs", type=int, default=1, help="parallel LOSO folds (processes)")
    p.add_argument("--distribute", choices=("mirrored", "multiworker"), help="tf.distribute strategy: mirrored (all "
                   "local GPUs) or multiworker (one process per host, the cluster in TF_CONFIG; the chief writes)")
    p.add_argument("--no-final", action="store_true", help="LOSO: skip the final model on all participants")
    p.add_argument("--folds", metavar="ID,ID", help="LOSO: run only the folds holding out these participants, and "
                   "with 'final' the final model (one job of a cluster array; see `alanet merge`)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.add_argument("--out", required=True, help="run directory to create")
    p.set_defaults(func=lazy("alanet.train.commands:cmd_train"))

    p = sub.add_parser("merge", help="merge LOSO fold runs (one cluster job each) into the complete run",
                       description="Pool the folds of leave-one-subject-out runs made with `alanet train --eval loso "
                       "--folds ...` into one run directory, exactly as a full LOSO run pools them (metrics, "
                       "report, and the final model when one part holds it). Refuses parts from different data or "
                       "settings, a run or a fold given twice, and (without --partial) a missing fold.")
    p.add_argument("runs", nargs="+", help="run directories written by `alanet train --eval loso [--folds ...]`")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--partial", action="store_true", help="accept a set with folds missing: the result is a part "
                   "itself (pooled over the folds it holds), for a later merge to complete")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=lazy("alanet.train.commands:cmd_merge"))

    p = sub.add_parser("evaluate", help="re-score a trained run on (other) data",
                       description="Score a run directory's model on a dataset with the run's windows, "
                       "normalisation and class names; prints metrics as JSON.")
    p.add_argument("run", help="run directory written by `alanet train`")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--format", choices=("emopain", "csv"))
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.set_defaults(func=lazy("alanet.train.commands:cmd_evaluate"))

    p = sub.add_parser("compare", help="one table over several run directories",
                       description="Print a Markdown table (the paper's Tables I–III shape) over run directories.")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", help="also write the table to this file")
    p.set_defaults(func=lazy("alanet.train.commands:cmd_compare"))
