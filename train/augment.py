"""Training-split augmentation, as in the paper: Gaussian jitter, random zeroing of
frames and of whole body parts; minority classes get more augmented copies.

Works on normalised windows (so σ is in standard deviations). Padded frames stay 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SIGMAS = (0.05, 0.1, 0.15)
DROP_PS = (0.05, 0.1, 0.15)
MAX_BALANCE = 8  # a minority class gets at most this many times the base copies


def jitter(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, sigma, x.shape).astype(np.float32)


def zero_frames(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    keep = rng.random(x.shape[0]) >= p
    return x * keep[:, None]


def zero_parts(x: np.ndarray, p: float, groups: Sequence[Sequence[int]], rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    for g in groups:
        if rng.random() < p:
            out[:, list(g)] = 0.0
    return out


def copies_per_class(y: np.ndarray, n_classes: int, copies: int, balance: bool = True) -> np.ndarray:
    """Augmented copies per window of each class: ``copies``, times ≈ majority/minority ratio."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    if not balance:
        return np.where(counts > 0, copies, 0).astype(int)
    ratio = np.where(counts > 0, np.round(counts.max() / np.maximum(counts, 1)), 0)
    return (copies * np.clip(ratio, 1, MAX_BALANCE) * (counts > 0)).astype(int)


def augment(x: np.ndarray, mask: np.ndarray, y: np.ndarray, groups: Sequence[Sequence[int]], n_classes: int,
            copies: int, rng: np.random.Generator, balance: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Originals plus augmented copies (each one random transform), shuffled.

    Returns ``(x, mask, y)``. ``copies = 0`` returns the input unchanged.
    """
    if copies <= 0 or len(y) == 0:
        return x, mask, y
    per_class = copies_per_class(y, n_classes, copies, balance)
    xs, ms, ys = [x], [mask], [y]
    for i in range(len(y)):
        for _ in range(int(per_class[y[i]])):
            kind = rng.integers(3)
            if kind == 0:
                a = jitter(x[i], float(rng.choice(SIGMAS)), rng)
            elif kind == 1:
                a = zero_frames(x[i], float(rng.choice(DROP_PS)), rng)
            else:
                a = zero_parts(x[i], float(rng.choice(DROP_PS)), groups, rng)
            xs.append((a * mask[i][:, None])[None].astype(np.float32))
            ms.append(mask[i][None])
            ys.append(y[i:i + 1])
    xo, mo, yo = np.concatenate(xs), np.concatenate(ms), np.concatenate(ys)
    order = rng.permutation(len(yo))
    return xo[order], mo[order], yo[order]
