"""Feature computation shared by the synthetic generator, the trainer and the gateway.

One implementation, no TensorFlow: the model sees the same numbers in the field as
in training. Batch functions work on whole recordings; :class:`StreamingFeatures`
computes exactly the same values one frame at a time on the gateway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from alanet.device.schema import Schema


def energy_from_angles(angles: np.ndarray, sample_rate_hz: float) -> np.ndarray:
    """Energy = squared angular velocity, from consecutive frames at ``sample_rate_hz``.

    ``angles`` is [T, J] in rad; the result is [T, J] in rad²/s². The first frame has
    no predecessor and gets energy 0 (the streaming version does the same).
    """
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim != 2:
        raise ValueError(f"angles must be [T, J], got shape {angles.shape}")
    vel = np.zeros_like(angles)
    vel[1:] = np.diff(angles, axis=0) * sample_rate_hz
    return (vel * vel).astype(np.float32)


def emopain_frame_features(angles: np.ndarray, emg: np.ndarray, sample_rate_hz: float) -> np.ndarray:
    """[T,13] angles + [T,4] sEMG envelopes → [T,30] channels in EmoPain order."""
    return np.concatenate([np.asarray(angles, np.float32), energy_from_angles(angles, sample_rate_hz),
                           np.asarray(emg, np.float32)], axis=1)


class EnvelopeFilter:
    """Upper envelope of the rectified sEMG: full-wave rectification, then a
    2nd-order Butterworth low-pass (default 6 Hz), run causally sample by sample.

    The gateway runs it on RAW_EMG blocks; the synthetic generator uses the same
    filter, so enveloped raw sEMG matches what the training data holds.
    """

    def __init__(self, fs_hz: float, cutoff_hz: float = 6.0, channels: int = 4) -> None:
        from scipy.signal import butter

        if not 0 < cutoff_hz < fs_hz / 2:
            raise ValueError(f"cutoff {cutoff_hz} Hz must lie in (0, {fs_hz / 2}) Hz")
        self.b, self.a = butter(2, cutoff_hz, btype="low", fs=fs_hz)
        self.zi = np.zeros((channels, 2))

    def process(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` [N, channels] → envelope [N, channels] (state carried across calls)."""
        from scipy.signal import lfilter

        x = np.abs(np.asarray(raw, dtype=np.float64)).T
        y, self.zi = lfilter(self.b, self.a, x, axis=1, zi=self.zi)
        return np.maximum(y.T, 0.0).astype(np.float32)


class StreamingFeatures:
    """Per-frame EmoPain features on a stream: keeps the previous angle frame.

    ``push(angles, emg)`` returns the 30 feature values of that frame, identical to
    :func:`emopain_frame_features` over the whole stream; ``push_block`` does the same
    for a block of consecutive frames in one go. ``reset()`` after a long
    gap, so the first frame after it has energy 0 as at a recording's start.
    """

    def __init__(self, sample_rate_hz: float) -> None:
        self.fs = float(sample_rate_hz)
        self._prev: np.ndarray | None = None

    def reset(self) -> None:
        self._prev = None

    def push(self, angles: np.ndarray, emg: np.ndarray) -> np.ndarray:
        a = np.array(angles, dtype=np.float64)  # a copy: the caller may reuse its buffer
        n = a.shape[0]
        out = np.empty(2 * n + len(emg), np.float32)  # one float32 row, filled in place (no concatenate)
        out[:n] = a
        if self._prev is None:
            out[n:2 * n] = 0.0
        else:
            v = (a - self._prev) * self.fs
            np.multiply(v, v, out=v)
            out[n:2 * n] = v
        out[2 * n:] = emg
        self._prev = a
        return out

    def push_block(self, angles: np.ndarray, emg: np.ndarray) -> np.ndarray:
        """``push`` for ``n`` consecutive frames at once: angles [n, J], sEMG [n, E] (or one [E] row for all).

        Returns [n, 2J + E] float32, bit for bit what ``n`` calls of ``push`` return (the
        same float64 operations, element by element).
        """
        a = np.array(angles, dtype=np.float64)  # a copy, as push makes
        n, j = a.shape
        out = np.empty((n, 2 * j + np.shape(emg)[-1]), np.float32)
        if n == 0:
            return out
        out[:, :j] = a
        v = np.empty_like(a)
        if self._prev is None:
            v[0] = 0.0
        else:
            np.subtract(a[0], self._prev, out=v[0])
            v[0] *= self.fs
        np.subtract(a[1:], a[:-1], out=v[1:])
        v[1:] *= self.fs
        np.multiply(v, v, out=v)
        out[:, j:2 * j] = v
        out[:, 2 * j:] = emg
        self._prev = a[-1].copy()
        return out


NORMALIZATION_MODES = ("population", "per-wearer")


@dataclass(frozen=True)
class Normalizer:
    """Per-channel z-score, fitted on training participants only and shipped in the bundle.

    Two modes:

    - ``population`` (``prior_frames == 0``): every window is normalised with the
      training participants' statistics ``mean`` / ``std``.
    - ``per-wearer`` (``prior_frames > 0``): each wearer's own running statistics,
      causal: a window is normalised with the mean and variance of everything this
      wearer has sent so far (up to the window's last frame), blended with the
      population statistics as a prior worth ``prior_frames`` frames. A new wearer
      starts at the population values and moves towards its own as it streams. The
      trainer computes the same numbers per recording (:func:`running_statistics`),
      the gateway per wearer (:class:`WearerStats`).
    """

    mean: np.ndarray  # [C] float32
    std: np.ndarray  # [C] float32, > 0
    prior_frames: float = 0.0  # > 0: per-wearer running statistics with this prior weight

    @property
    def per_wearer(self) -> bool:
        return self.prior_frames > 0

    @property
    def mode(self) -> str:
        return NORMALIZATION_MODES[1] if self.per_wearer else NORMALIZATION_MODES[0]

    @cached_property
    def prior_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """The prior as the sums its ``prior_frames`` frames stand for (float64, computed once):
        of the values, ``n0 * mean``, and of their squares, ``n0 * (std**2 + mean**2)``."""
        n0 = float(self.prior_frames)
        mu0, var0 = self.mean.astype(np.float64), self.std.astype(np.float64) ** 2
        return n0 * mu0, n0 * (var0 + mu0 * mu0)

    def with_prior(self, prior_frames: float) -> "Normalizer":
        """The same population statistics in per-wearer mode (``prior_frames`` > 0) or population mode (0)."""
        if not (math.isfinite(prior_frames) and prior_frames >= 0):
            raise ValueError(f"prior_frames must be finite and >= 0, got {prior_frames}")
        return Normalizer(self.mean, self.std, float(prior_frames))

    @classmethod
    def fit(cls, frames: np.ndarray, min_std: float = 1e-6) -> "Normalizer":
        """Fit on [N, C] frames (concatenate the training participants' recordings)."""
        frames = np.asarray(frames, dtype=np.float64)
        if frames.ndim != 2 or frames.shape[0] == 0:
            raise ValueError(f"need [N, C] frames with N > 0, got shape {frames.shape}")
        if not np.all(np.isfinite(frames)):
            raise ValueError("frames contain NaN or inf")
        std = frames.std(axis=0)
        return cls(frames.mean(axis=0).astype(np.float32), np.maximum(std, min_std).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Normalise [..., C] values (frames or windows) with the population statistics."""
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.std).astype(np.float32)

    def stream_windows(self, values: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """The windows [N, length, C] of one wearer's stream ``values`` [T, C] at ``starts``,
        normalised as the gateway normalises them (per-wearer: with the statistics at each
        window's last frame)."""
        starts = np.asarray(starts, np.int64)
        v = np.asarray(values, np.float32)
        if len(starts) == 0:
            return np.zeros((0, length, v.shape[1]), np.float32)
        x = np.stack([v[s:s + length] for s in starts])
        if not self.per_wearer:
            return self.apply(x)
        return normalise_at_ends(x, v, starts + length - 1, self)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}
        if self.per_wearer:
            d.update(mode=self.mode, prior_frames=float(self.prior_frames))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], n_channels: int | None = None) -> "Normalizer":
        try:
            mean = np.asarray(d["mean"], dtype=np.float32)
            std = np.asarray(d["std"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad normalization statistics: {exc}") from None
        if mean.shape != std.shape or mean.ndim != 1:
            raise ValueError("normalization mean and std must be equal-length lists")
        if n_channels is not None and mean.shape[0] != n_channels:
            raise ValueError(f"normalization has {mean.shape[0]} channels, schema has {n_channels}")
        if not (np.all(np.isfinite(mean)) and np.all(std > 0) and np.all(np.isfinite(std))):
            raise ValueError("normalization statistics must be finite with std > 0")
        mode = d.get("mode", NORMALIZATION_MODES[0])
        if mode not in NORMALIZATION_MODES:
            raise ValueError(f"normalization mode {mode!r} is not one of {', '.join(NORMALIZATION_MODES)}")
        prior = d.get("prior_frames", 0.0)
        if mode == NORMALIZATION_MODES[0] and "prior_frames" in d:
            raise ValueError("normalization prior_frames is only for mode per-wearer")
        if mode == NORMALIZATION_MODES[1]:
            if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not (math.isfinite(prior) and prior > 0):
                raise ValueError(f"normalization prior_frames must be a number > 0 for mode per-wearer, got {prior!r}")
            return cls(mean, std, float(prior))
        return cls(mean, std)


MIN_VARIANCE = 1e-12


def _with_prior(norm: Normalizer, n: Any, s: np.ndarray, s2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float64) of the population prior (``norm.prior_frames`` frames of
    ``norm.mean`` / ``norm.std``) together with ``n`` frames whose sum is ``s`` and sum of
    squares ``s2`` (broadcast: one wearer now, or every frame of a stream at once)."""
    s0, s20 = norm.prior_sums
    total = float(norm.prior_frames) + n
    mean = (s0 + s) / total
    var = (s20 + s2) / total - mean * mean
    return mean, np.sqrt(np.maximum(var, MIN_VARIANCE))


def running_statistics(values: np.ndarray, norm: Normalizer) -> tuple[np.ndarray, np.ndarray]:
    """Per-wearer statistics after every frame of one stream ``values`` [T, C]: mean and
    std [T, C] (float64) of the population prior together with frames ``0..t``. What
    :class:`WearerStats` gives on the gateway after the same frames."""
    v = np.asarray(values, np.float64)
    n = np.arange(1, len(v) + 1, dtype=np.float64)[:, None]
    return _with_prior(norm, n, np.cumsum(v, axis=0), np.cumsum(v * v, axis=0))


def normalise_at_ends(x: np.ndarray, values: np.ndarray, ends: np.ndarray, norm: Normalizer) -> np.ndarray:
    """Windows ``x`` [N, L, C] of one wearer's stream ``values`` [T, C], each normalised with
    the per-wearer statistics at its last frame ``ends`` [N] (float32)."""
    mean, std = running_statistics(values, norm)
    ends = np.asarray(ends, np.int64)
    return ((x - mean[ends][:, None]) / std[ends][:, None]).astype(np.float32)


class WearerStats:
    """One wearer's running per-channel sums on the gateway (per-wearer normalisation)."""

    def __init__(self, n_channels: int) -> None:
        self.n = 0
        self._s = np.zeros(n_channels, np.float64)
        self._s2 = np.zeros(n_channels, np.float64)

    def reset(self) -> None:
        self.n = 0
        self._s[:] = 0.0
        self._s2[:] = 0.0

    def push(self, rows: np.ndarray) -> None:
        """Add feature frames [C] or [k, C]."""
        r = np.asarray(rows, np.float64).reshape(-1, self._s.shape[0])
        self.n += len(r)
        self._s += r.sum(axis=0)
        self._s2 += np.einsum("ij,ij->j", r, r)

    def mean_inv_std(self, norm: Normalizer) -> tuple[np.ndarray, np.ndarray]:
        """Mean and 1 / std [C] (float32) of the prior and the frames pushed so far."""
        mean, std = _with_prior(norm, self.n, self._s, self._s2)
        return mean.astype(np.float32), (1.0 / std).astype(np.float32)


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise ValueError naming ``what`` and the first bad position if any value is NaN/inf."""
    bad = ~np.isfinite(values)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what}: non-finite value at {pos}")


def schema_matches(schema: Schema, other: Schema) -> str | None:
    """None if the two schemas feed a model the same numbers; else the reason they differ."""
    if schema.names != other.names:
        return f"channel list differs ({schema.n_channels} vs {other.n_channels} channels)"
    if not math.isclose(schema.sample_rate_hz, other.sample_rate_hz, rel_tol=1e-6):
        return f"sample rate differs ({schema.sample_rate_hz} vs {other.sample_rate_hz} Hz)"
    return None
