"""Classification metrics (scikit-learn) and their mean over LOSO folds."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SCALARS = ("accuracy", "macro_f1", "mcc")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, macro F1, MCC, per-class F1 and the confusion matrix (rows = truth)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef

    labels = list(range(n_classes))
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)) if len(y_true) else 0.0,
        "per_class_f1": [float(v) for v in f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)],
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "n_windows": int(len(y_true)),
    }


def mean_over_folds(folds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and std) of the scalar metrics and per-class F1 over folds; summed confusion."""
    out: dict[str, Any] = {}
    for k in (*SCALARS, "train_seconds"):
        vals = [float(f[k]) for f in folds if k in f]
        if vals:
            out[k] = float(np.mean(vals))
            out[f"{k}_std"] = float(np.std(vals))
    out["per_class_f1"] = [float(v) for v in np.mean([f["per_class_f1"] for f in folds], axis=0)]
    out["confusion_matrix"] = np.sum([f["confusion_matrix"] for f in folds], axis=0).tolist()
    out["n_windows"] = int(sum(f["n_windows"] for f in folds))
    return out
