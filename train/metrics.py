"""Classification metrics (scikit-learn, with this toolkit's one macro-F1 definition).

Macro F1 averages the classes present in the ground truth
(:func:`alanet.device.scoring.macro_f1`, also used by the converter's parity check):
a LOSO fold holding one pain level is not capped at 1/3. Per-class F1 is ``None`` for
a class absent from the evaluated windows. ROC-AUC and PR-AUC (average precision) are
threshold-free: the positive class for two classes, the mean one-vs-rest over the
present classes otherwise.

LOSO runs report the **pooled** predictions of every fold as the headline (each window
is predicted by the model that never saw its participant), the folds one by one, and a
per-participant vote (the class most of a participant's windows were given), which is
the meaningful figure for a per-person label such as the pain level.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from alanet.device.scoring import f1_of_class, macro_f1
from alanet.device.windowing import majority_label

SCALARS = ("accuracy", "macro_f1", "mcc", "roc_auc", "pr_auc")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int,
                           proba: np.ndarray | None = None) -> dict[str, Any]:
    """Accuracy, macro F1 (present classes), MCC, per-class F1, confusion matrix (rows = truth),
    and with ``proba`` ROC-AUC and PR-AUC."""
    from sklearn.metrics import accuracy_score, confusion_matrix, matthews_corrcoef

    labels = list(range(n_classes))
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    present = set(np.unique(y_true).tolist())
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": macro_f1(y_true, y_pred, n_classes),
        "mcc": float(matthews_corrcoef(y_true, y_pred)) if len(np.unique(np.concatenate([y_true, y_pred]))) > 1 else 0.0,
        "per_class_f1": [f1_of_class(y_true, y_pred, c) if c in present else None for c in labels],
        "classes_present": sorted(int(c) for c in present),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n_windows": int(len(y_true)),
    }
    if proba is not None:
        out.update(ranking_metrics(y_true, np.asarray(proba, np.float64), n_classes))
    return out


def ranking_metrics(y_true: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, float | None]:
    """ROC-AUC and PR-AUC from probabilities (None where undefined: one class only)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y_true, np.int64)
    classes = [c for c in range(n_classes) if 0 < np.sum(y == c) < len(y)]
    if not classes or len(proba) != len(y):
        return {"roc_auc": None, "pr_auc": None}
    if n_classes == 2:
        classes = [1]
    roc = [roc_auc_score(y == c, proba[:, c]) for c in classes]
    pr = [average_precision_score(y == c, proba[:, c]) for c in classes]
    return {"roc_auc": float(np.mean(roc)), "pr_auc": float(np.mean(pr))}


def mean_over_folds(folds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and std) of the scalar metrics over folds (each on its own present classes)."""
    out: dict[str, Any] = {}
    for k in (*SCALARS, "train_seconds"):
        vals = [float(f[k]) for f in folds if f.get(k) is not None]
        if vals:
            out[k] = float(np.mean(vals))
            out[f"{k}_std"] = float(np.std(vals))
    return out


def participant_vote(y_true: np.ndarray, y_pred: np.ndarray, participant: np.ndarray,
                     n_classes: int) -> dict[str, Any]:
    """One decision per participant: the class most of their windows were given (ties: the
    higher class), against their most common true class."""
    people = sorted(set(np.asarray(participant).tolist()))
    truth, vote = [], []
    for p in people:
        sel = np.asarray(participant) == p
        truth.append(majority_label(y_true[sel]))
        vote.append(majority_label(y_pred[sel]))
    m = classification_metrics(np.asarray(truth), np.asarray(vote), n_classes)
    m["participants"] = {p: {"true": t, "vote": v} for p, t, v in zip(people, truth, vote)}
    m["n_participants"] = len(people)
    return m
