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


def test_macro_f1_averages_the_classes_present_in_the_truth():
    """A one-class LOSO fold is not capped at 1/3: absent classes are not scored."""
    m = classification_metrics(np.array([1, 1, 1, 1]), np.array([1, 1, 1, 1]), 3)
    assert m["macro_f1"] == 1.0 and m["per_class_f1"] == [None, 1.0, None] and m["classes_present"] == [1]
    m = classification_metrics(np.array([1, 1, 1, 1]), np.array([1, 1, 0, 2]), 3)
    assert m["macro_f1"] == pytest.approx(2 / 3)  # class 1: P 1, R 1/2; the wrong guesses cost recall
    m = classification_metrics(np.array([0, 0, 1]), np.array([0, 0, 1]), 3)
    assert m["per_class_f1"] == [1.0, 1.0, None]
    assert m["confusion_matrix"][2] == [0, 0, 0]


def test_one_definition_in_trainer_and_parity_check():
    from alanet.convert.parity import compare
    from alanet.device.scoring import macro_f1

    rng = np.random.default_rng(4)
    y = rng.integers(1, 3, 50)  # class 0 absent
    p = rng.dirichlet(np.ones(3), 50)
    pred = p.argmax(axis=1)
    assert classification_metrics(y, pred, 3)["macro_f1"] == pytest.approx(macro_f1(y, pred))
    assert compare(p, p, y, 0.99).macro_f1_keras == pytest.approx(macro_f1(y, pred))


def test_ranking_metrics():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 100)
    p1 = np.clip(y * 0.3 + rng.random(100) * 0.7, 0, 1)
    m = classification_metrics(y, (p1 > 0.5).astype(int), 2, np.stack([1 - p1, p1], axis=1))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p1))
    one = classification_metrics(np.ones(5, int), np.ones(5, int), 2, np.tile([0.2, 0.8], (5, 1)))
    assert one["roc_auc"] is None  # undefined with one class


def test_participant_vote():
    from alanet.train.metrics import participant_vote

    y = np.array([2, 2, 2, 0, 0, 1, 1, 1])
    pred = np.array([2, 1, 2, 0, 1, 1, 0, 0])
    who = np.array(["a", "a", "a", "b", "b", "c", "c", "c"])
    v = participant_vote(y, pred, who, 3)
    assert v["participants"] == {"a": {"true": 2, "vote": 2}, "b": {"true": 0, "vote": 1}, "c": {"true": 1, "vote": 0}}
    assert v["accuracy"] == pytest.approx(1 / 3) and v["n_participants"] == 3


def test_mean_over_folds():
    a = classification_metrics(np.array([0, 1]), np.array([0, 1]), 2) | {"train_seconds": 2.0}
    b = classification_metrics(np.array([0, 1]), np.array([1, 1]), 2) | {"train_seconds": 4.0}
    m = mean_over_folds([a, b])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["train_seconds"] == pytest.approx(3.0)
    assert m["accuracy_std"] == pytest.approx(0.25)
