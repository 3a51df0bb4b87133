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


# Largest mean total-variation distance between the Keras and the TFLite attention
# distributions (0 = identical, 1 = disjoint), per quantisation. Measured on small
# ALANet-per-part models (docs/rehab.md): float32/float16/dynamic below 1e-4, int8 0.041
# (temporal) / 0.013 (bodily); the limits leave room for larger models without letting a
# wrong output mapping through (a swapped or shuffled output is far above them).
MAX_ATTENTION_TV = {"float32": 0.02, "float16": 0.02, "dynamic": 0.05, "int8": 0.1}


@dataclass(frozen=True)
class AttentionParity:
    """How closely the converted model's attention follows the Keras model's, per window."""

    temporal_max_abs_diff: float
    body_max_abs_diff: float
    temporal_tv: float  # mean total-variation distance of the temporal weights
    body_tv: float  # mean total-variation distance of the bodily weights
    peak_agreement: float  # share of windows whose temporal peak is within one frame
    top_agreement: float  # share of windows whose largest bodily weight is the same
    n_windows: int
    max_tv: float

    @property
    def passed(self) -> bool:
        return self.temporal_tv <= self.max_tv and self.body_tv <= self.max_tv

    def to_dict(self) -> dict:
        return asdict(self)


def compare_attention(keras_t: np.ndarray, lite_t: np.ndarray, keras_b: np.ndarray, lite_b: np.ndarray,
                      max_tv: float) -> AttentionParity:
    """Compare [N, L] temporal and [N, P] bodily attention of Keras and TFLite."""
    kt, tt = np.asarray(keras_t, np.float64), np.asarray(lite_t, np.float64)
    kb, tb = np.asarray(keras_b, np.float64), np.asarray(lite_b, np.float64)
    if kt.shape != tt.shape or kb.shape != tb.shape:
        raise ValueError(f"Keras attention {kt.shape}/{kb.shape} vs TFLite {tt.shape}/{tb.shape}")
    peak = np.abs(kt.argmax(axis=1) - tt.argmax(axis=1)) <= 1
    return AttentionParity(float(np.max(np.abs(kt - tt))), float(np.max(np.abs(kb - tb))),
                           float(np.mean(0.5 * np.abs(kt - tt).sum(axis=1))),
                           float(np.mean(0.5 * np.abs(kb - tb).sum(axis=1))),
                           float(np.mean(peak)), float(np.mean(kb.argmax(axis=1) == tb.argmax(axis=1))),
                           int(len(kt)), float(max_tv))
