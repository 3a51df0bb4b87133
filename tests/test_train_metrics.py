"""Metrics against scikit-learn and hand-computed values on known predictions."""

from __future__ import annotations

import numpy as np
import pytest

from alanet.train.metrics import classification_metrics, mean_over_folds


def test_known_predictions_hand_computed():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 0, 1, 0, 1, 1, 0, 2, 2, 1])
    m = classification_metrics(y_true, y_pred, 3)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["confusion_matrix"] == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    # class 0: P=3/4 R=3/4; class 1: P=2/4 R=2/3; class 2: P=1 R=2/3
    f1 = [0.75, 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 0.8]
    assert m["per_class_f1"] == pytest.approx(f1)
    assert m["macro_f1"] == pytest.approx(np.mean(f1))


def test_matches_scikit_learn_on_random_predictions():
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 3, 200))
    m = classification_metrics(y_true, y_pred, 3)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y_true, y_pred))
    assert m["n_windows"] == 200


def test_absent_class_counts_as_zero_f1():
    m = classification_metrics(np.array([0, 0, 1]), np.array([0, 0, 1]), 3)
    assert m["per_class_f1"] == [1.0, 1.0, 0.0]
    assert m["confusion_matrix"][2] == [0, 0, 0]


def test_mean_over_folds():
    a = classification_metrics(np.array([0, 1]), np.array([0, 1]), 2) | {"train_seconds": 2.0}
    b = classification_metrics(np.array([0, 1]), np.array([1, 1]), 2) | {"train_seconds": 4.0}
    m = mean_over_folds([a, b])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["train_seconds"] == pytest.approx(3.0)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["accuracy_std"] == pytest.approx(0.25)
