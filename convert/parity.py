"""Parity of a converted model with its Keras original (numpy only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Minimum argmax agreement with Keras, per quantisation (issue: 99 % float, 97 % int8).
DEFAULT_MIN_AGREEMENT = {"float32": 0.99, "float16": 0.99, "dynamic": 0.99, "int8": 0.97}


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    agreement: float
    macro_f1_keras: float | None
    macro_f1_tflite: float | None
    n_windows: int
    threshold: float

    @property
    def passed(self) -> bool:
        return self.agreement >= self.threshold

    def to_dict(self) -> dict:
        return asdict(self)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over the classes present in ``y_true`` or ``y_pred`` (ignores labels < 0)."""
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    keep = y_true >= 0
    y_true, y_pred = y_true[keep], y_pred[keep]
    f1s = []
    for c in range(n_classes):
        tp = int(np.sum((y_true == c) & (y_pred == c)))
        fp = int(np.sum((y_true != c) & (y_pred == c)))
        fn = int(np.sum((y_true == c) & (y_pred != c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


def compare(keras_probs: np.ndarray, tflite_probs: np.ndarray, y: np.ndarray | None, threshold: float) -> Parity:
    """Max |Δ| of probabilities, argmax agreement and macro F1 of both against ``y``."""
    k = np.asarray(keras_probs, dtype=np.float32)
    t = np.asarray(tflite_probs, dtype=np.float32)
    if k.shape != t.shape:
        raise ValueError(f"Keras output {k.shape} vs TFLite output {t.shape}")
    kp, tp = k.argmax(axis=1), t.argmax(axis=1)
    n_classes = k.shape[1]
    f1k = f1t = None
    if y is not None and np.any(np.asarray(y) >= 0):
        f1k, f1t = macro_f1(y, kp, n_classes), macro_f1(y, tp, n_classes)
    return Parity(float(np.max(np.abs(k - t))), float(np.mean(kp == tp)), f1k, f1t, int(len(k)), float(threshold))
