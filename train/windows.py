"""Dataset → labelled windows for one task, and training-only normalisation.

Cutting uses the one shared implementation (:mod:`alanet.device.windowing`), so the
trainer sees windows at exactly the positions the gateway's ring buffer emits them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from alanet.device.features import Normalizer, normalise_at_ends
from alanet.device.windowing import IGNORE, Windows, WindowSpec, segment_windows
from alanet.errors import InputError
from alanet.train.data.recording import Dataset


@dataclass(frozen=True)
class TaskWindows:
    """Labelled windows of one task (unlabelled windows dropped), raw (not normalised)."""

    x: np.ndarray  # [N, L, C] float32, zero where mask is False
    mask: np.ndarray  # [N, L] bool
    y: np.ndarray  # [N] int64 in [0, n_classes)
    participant: np.ndarray  # [N] str
    recording: np.ndarray  # [N] index into dataset.recordings
    start: np.ndarray  # [N] first frame
    task: str
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    def of(self, participants: set[str] | list[str] | tuple[str, ...]) -> np.ndarray:
        """Indices of the windows of ``participants``."""
        return np.flatnonzero(np.isin(self.participant, list(participants)))


def make_windows(dataset: Dataset, task: str, spec: WindowSpec) -> TaskWindows:
    """Cut every recording per segment and keep the windows labelled for ``task``."""
    if task not in dataset.label_names:
        raise InputError(f"{dataset.root or 'dataset'}: task {task!r} not in this {dataset.format} dataset "
                         f"(has {', '.join(sorted(dataset.label_names)) or 'no labels'})")
    if not dataset.recordings:
        raise InputError(f"{dataset.root or 'dataset'}: no recordings")
    longest = max(r.n_frames for r in dataset.recordings)
    if spec.length > longest:
        raise InputError(f"--window {spec.length} is longer than every recording (longest has {longest} frames)")
    parts: list[Windows] = []
    for i, rec in enumerate(dataset.recordings):
        if task not in rec.labels:
            raise InputError(f"{rec.path or rec.name}: no {task!r} labels")
        parts.append(segment_windows(rec.values, rec.labels[task], spec, rec.segment, source=i))
    w = Windows.concat(parts, spec.length, dataset.schema.n_channels)
    keep = np.flatnonzero(w.y != IGNORE)
    if keep.size == 0:
        raise InputError(f"{dataset.root or 'dataset'}: no window is labelled for task {task!r}")
    w = w.select(keep)
    names = tuple(dataset.label_names[task])
    if int(w.y.max()) >= len(names):
        raise InputError(f"{dataset.root or 'dataset'}: label {int(w.y.max())} outside the {len(names)} classes of {task!r}")
    who = np.array([r.participant for r in dataset.recordings])[w.source]
    return TaskWindows(w.x, w.mask, w.y, who, w.source, w.start, task, names)


def fit_normalizer(dataset: Dataset, participants: set[str] | list[str] | tuple[str, ...],
                   prior_frames: float = 0.0) -> Normalizer:
    """Per-channel z-score statistics over every frame of ``participants`` only
    (``prior_frames`` > 0: per-wearer mode with these statistics as its prior)."""
    keep = set(participants)
    frames = [r.values for r in dataset.recordings if r.participant in keep]
    if not frames:
        raise InputError(f"no recordings for participants {', '.join(sorted(keep))}")
    return Normalizer.fit(np.concatenate(frames)).with_prior(prior_frames)


def normalise(x: np.ndarray, mask: np.ndarray, norm: Normalizer) -> np.ndarray:
    """Normalise windows with the population statistics and keep padded frames at exactly 0
    (what ``Masking`` skips)."""
    out = norm.apply(x)
    out[~mask] = 0.0
    return out


def normalise_windows(tw: TaskWindows, idx: np.ndarray, dataset: Dataset, norm: Normalizer) -> np.ndarray:
    """The windows ``tw[idx]`` normalised as the gateway normalises them, padded frames at 0.

    Population mode: :func:`normalise`. Per-wearer mode: each window with its
    recording's running statistics at the window's last frame
    (:func:`~alanet.device.features.running_statistics`; a recording is one wearer's
    stream from its start).
    """
    idx = np.asarray(idx, np.int64)
    x, mask = tw.x[idx], tw.mask[idx]
    if not norm.per_wearer:
        return normalise(x, mask, norm)
    out = np.empty_like(x)
    ends = tw.start[idx] + mask.sum(axis=1) - 1
    rec = tw.recording[idx]
    for r in np.unique(rec):
        sel = np.flatnonzero(rec == r)
        out[sel] = normalise_at_ends(x[sel], dataset.recordings[int(r)].values, ends[sel], norm)
    out[~mask] = 0.0
    return out


def dataset_fingerprint(dataset: Dataset) -> str:
    """SHA-256 over every recording's participant, name, values, labels and segments."""
    h = hashlib.sha256()
    for r in sorted(dataset.recordings, key=lambda r: (r.participant, r.name)):
        h.update(f"{r.participant}\0{r.name}\0{r.values.shape}\0".encode())
        h.update(np.ascontiguousarray(r.values, np.float32).tobytes())
        for k in sorted(r.labels):
            h.update(k.encode())
            h.update(np.ascontiguousarray(r.labels[k], np.int64).tobytes())
        if r.segment is not None:
            h.update(np.ascontiguousarray(r.segment, np.int64).tobytes())
    return h.hexdigest()
