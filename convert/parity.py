"""Parity of a converted model with its Keras original (numpy only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from alanet.device.decisions import window_labels
from alanet.device.scoring import macro_f1

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


def compare(keras_probs: np.ndarray, tflite_probs: np.ndarray, y: np.ndarray | None, threshold: float,
            decision: Mapping[str, Any] | None = None) -> Parity:
    """Max |Δ| of probabilities, agreement of the decisions (the run's calibrated rule,
    else argmax) and macro F1 of both against ``y``."""
    k = np.asarray(keras_probs, dtype=np.float32)
    t = np.asarray(tflite_probs, dtype=np.float32)
    if k.shape != t.shape:
        raise ValueError(f"Keras output {k.shape} vs TFLite output {t.shape}")
    kp, tp = window_labels(k, decision), window_labels(t, decision)
    f1k = f1t = None
    if y is not None and np.any(np.asarray(y) >= 0):
        f1k, f1t = macro_f1(y, kp), macro_f1(y, tp)
    return Parity(float(np.max(np.abs(k - t))), float(np.mean(kp == tp)), f1k, f1t, int(len(k)), float(threshold))
