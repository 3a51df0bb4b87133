"""Training-split augmentation, as in the paper: Gaussian jitter, random zeroing of
frames and of whole body parts; plus (``kinds``) ``scale``, a per-channel gain and
offset, and ``warp``, a change of tempo: the ways one person's sensors, muscles and
movements differ from another's.

Works on normalised windows (so σ is in standard deviations). Padded frames stay 0.
Class balance is the loss's business (class weights); ``balance=True`` keeps the older
behaviour of giving minority classes more augmented copies.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SIGMAS = (0.05, 0.1, 0.15)
DROP_PS = (0.05, 0.1, 0.15)
GAIN_SDS = (0.1, 0.2)  # per-channel gain ~ N(1, sd), offset ~ N(0, sd)
WARPS = (0.8, 0.9, 1.1, 1.25)  # tempo factors of the time warp
KINDS = ("jitter", "zero_frames", "zero_parts", "scale", "warp")
PAPER_KINDS = KINDS[:3]
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


def scale_channels(x: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Every channel times its own gain ~ N(1, sd), plus an offset ~ N(0, sd)."""
    c = x.shape[1]
    return x * rng.normal(1.0, sd, c).astype(np.float32) + rng.normal(0.0, sd, c).astype(np.float32)


def time_warp(x: np.ndarray, n_real: int, factor: float, rng: np.random.Generator) -> np.ndarray:
    """The real frames replayed ``factor`` times faster around a random anchor (edges held),
    the way one person's tempo differs from another's."""
    out = x.copy()
    if n_real < 2:
        return out
    t = np.arange(n_real, dtype=np.float64)
    anchor = rng.uniform(0, n_real - 1)
    src = np.clip(anchor + (t - anchor) * factor, 0, n_real - 1)
    for c in range(x.shape[1]):
        out[:n_real, c] = np.interp(src, t, x[:n_real, c])
    return out


def copies_per_class(y: np.ndarray, n_classes: int, copies: int, balance: bool = True) -> np.ndarray:
    """Augmented copies per window of each class: ``copies``, times ≈ majority/minority ratio."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    if not balance:
        return np.where(counts > 0, copies, 0).astype(int)
    ratio = np.where(counts > 0, np.round(counts.max() / np.maximum(counts, 1)), 0)
    return (copies * np.clip(ratio, 1, MAX_BALANCE) * (counts > 0)).astype(int)


def augment(x: np.ndarray, mask: np.ndarray, y: np.ndarray, groups: Sequence[Sequence[int]], n_classes: int,
            copies: int, rng: np.random.Generator, balance: bool = False,
            kinds: Sequence[str] = PAPER_KINDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Originals plus augmented copies (each one random transform of ``kinds``), shuffled.

    Returns ``(x, mask, y)``. ``copies = 0`` returns the input unchanged.
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"augmentation kinds must be from {', '.join(KINDS)} (got {', '.join(kinds) or 'none'})")
    if copies <= 0 or len(y) == 0:
        return x, mask, y
    per_class = copies_per_class(y, n_classes, copies, balance)
    xs, ms, ys = [x], [mask], [y]
    for i in range(len(y)):
        for _ in range(int(per_class[y[i]])):
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind == "jitter":
                a = jitter(x[i], float(rng.choice(SIGMAS)), rng)
            elif kind == "zero_frames":
                a = zero_frames(x[i], float(rng.choice(DROP_PS)), rng)
            elif kind == "zero_parts":
                a = zero_parts(x[i], float(rng.choice(DROP_PS)), groups, rng)
            elif kind == "scale":
                a = scale_channels(x[i], float(rng.choice(GAIN_SDS)), rng)
            else:
                a = time_warp(x[i], int(mask[i].sum()), float(rng.choice(WARPS)), rng)
            xs.append((a * mask[i][:, None])[None].astype(np.float32))
            ms.append(mask[i][None])
            ys.append(y[i:i + 1])
    xo, mo, yo = np.concatenate(xs), np.concatenate(ms), np.concatenate(ys)
    order = rng.permutation(len(yo))
    return xo[order], mo[order], yo[order]
