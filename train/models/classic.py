"""Classic baselines (scikit-learn) on per-window statistics.

Each window [L, C] becomes 5·C numbers: per channel mean, standard deviation,
minimum, maximum and mean absolute frame-to-frame change, over its real (unmasked)
frames. A standard scaler and k-NN, an RBF SVM or a random forest follow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULTS: dict[str, dict[str, Any]] = {
    "knn": {"n_neighbors": 5},
    "svm": {"C": 1.0, "gamma": "scale"},
    "rf": {"n_estimators": 200, "max_depth": None},
}


def window_statistics(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """[N, L, C] windows (+ [N, L] mask) → [N, 5C] statistics over real frames."""
    x = np.asarray(x, np.float64)
    n, length, c = x.shape
    m = np.ones((n, length), bool) if mask is None else np.asarray(mask, bool)
    w = m[..., None].astype(np.float64)
    count = np.maximum(w.sum(axis=1), 1.0)
    mean = (x * w).sum(axis=1) / count
    std = np.sqrt((((x - mean[:, None]) ** 2) * w).sum(axis=1) / count)
    big = np.where(m[..., None], x, np.inf)
    small = np.where(m[..., None], x, -np.inf)
    mn = big.min(axis=1)
    mx = small.max(axis=1)
    mn = np.where(np.isfinite(mn), mn, 0.0)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    dm = (m[:, 1:] & m[:, :-1])[..., None].astype(np.float64)
    diff = (np.abs(np.diff(x, axis=1)) * dm).sum(axis=1) / np.maximum(dm.sum(axis=1), 1.0)
    return np.concatenate([mean, std, mn, mx, diff], axis=1).astype(np.float32)


def build_classic(name: str, hp: dict[str, Any], seed: int = 0):
    """A scikit-learn pipeline (scaler + estimator) for ``knn``, ``svm`` or ``rf``."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name == "knn":
        est = KNeighborsClassifier(n_neighbors=int(hp["n_neighbors"]))
    elif name == "svm":
        est = SVC(C=float(hp["C"]), gamma=hp["gamma"], class_weight="balanced", random_state=seed)
    elif name == "rf":
        est = RandomForestClassifier(n_estimators=int(hp["n_estimators"]), max_depth=hp["max_depth"],
                                     class_weight="balanced", random_state=seed, n_jobs=1)
    else:
        raise ValueError(f"unknown classic model {name!r}")
    return make_pipeline(StandardScaler(), est)


def n_params(pipeline) -> int:
    """A size measure for the report: stored numbers in the fitted estimator."""
    est = pipeline[-1]
    if hasattr(est, "support_vectors_"):
        return int(est.support_vectors_.size + est.dual_coef_.size)
    if hasattr(est, "estimators_"):
        return int(sum(t.tree_.node_count for t in est.estimators_))
    if hasattr(est, "_fit_X"):
        return int(np.asarray(est._fit_X).size)
    return 0
