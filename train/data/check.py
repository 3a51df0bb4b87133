"""Validate a dataset and summarise it (``alanet data check``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from alanet.device.windowing import IGNORE
from alanet.train.data.recording import Dataset


@dataclass(frozen=True)
class DatasetSummary:
    """What a dataset holds. ``class_balance``: task → (class name → frames); unlabelled
    frames are counted under ``"(unlabelled)"`` when there are any."""

    root: str
    format: str
    participants: tuple[str, ...]
    recordings: int
    frames: int
    duration_s: float
    sample_rate_hz: float
    channels: tuple[str, ...]
    groups: int
    class_balance: dict[str, dict[str, int]]


UNLABELLED = "(unlabelled)"


def summarize(dataset: Dataset) -> DatasetSummary:
    """Count participants, recordings, frames and per-task class balance (in frames)."""
    frames = sum(r.n_frames for r in dataset.recordings)
    balance: dict[str, dict[str, int]] = {}
    for task, names in dataset.label_names.items():
        counts = np.zeros(len(names), np.int64)
        unlabelled = 0
        for r in dataset.recordings:
            y = r.labels.get(task)
            if y is None:
                unlabelled += r.n_frames
                continue
            unlabelled += int(np.sum(y == IGNORE))
            lab = y[y != IGNORE]
            if lab.size:
                counts += np.bincount(lab, minlength=len(names))[:len(names)]
        balance[task] = {n: int(c) for n, c in zip(names, counts)}
        if unlabelled:
            balance[task][UNLABELLED] = unlabelled
    return DatasetSummary(
        root=dataset.root, format=dataset.format, participants=tuple(dataset.participants),
        recordings=len(dataset.recordings), frames=frames,
        duration_s=frames / dataset.schema.sample_rate_hz, sample_rate_hz=dataset.schema.sample_rate_hz,
        channels=tuple(dataset.schema.names), groups=len(dataset.schema.groups), class_balance=balance,
    )


def _duration(s: float) -> str:
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def render_summary(s: DatasetSummary) -> str:
    """A short human-readable report of :class:`DatasetSummary`."""
    people = ", ".join(s.participants)
    lines = [
        f"dataset      {s.root} ({s.format})",
        f"participants {len(s.participants)}: {people}",
        f"recordings   {s.recordings}",
        f"frames       {s.frames} ({_duration(s.duration_s)} at {s.sample_rate_hz:g} Hz)",
        f"channels     {len(s.channels)} in {s.groups} groups: {', '.join(s.channels)}",
    ]
    for task, counts in s.class_balance.items():
        total = sum(v for k, v in counts.items() if k != UNLABELLED) or 1
        parts = [f"{k} {v} ({100 * v / total:.1f}%)" if k != UNLABELLED else f"{k} {v}" for k, v in counts.items()]
        lines.append(f"task {task:<8} {'; '.join(parts)}")
    return "\n".join(lines)


def cmd_check(args: argparse.Namespace) -> int:
    """``alanet data check DIR [--format]``: load (validating every file), print the summary."""
    from alanet.train.data.loading import load_dataset

    print(render_summary(summarize(load_dataset(args.path, args.format))))
    return 0
