"""In-memory recordings: what every dataset loader returns (numpy only, no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alanet.device.schema import Schema


@dataclass(frozen=True)
class Recording:
    """One recording of one participant.

    ``values`` [T, C] float32 follows ``schema`` (EmoPain: 13 angles, 13 energies, 4 sEMG).
    ``labels`` maps a task name to per-frame integer labels [T] (``-1`` = unlabelled):
    EmoPain files give ``protective`` (0/1) and ``pain`` (0 healthy, 1 low, 2 high);
    generic CSV gives ``label``. ``segment`` [T] (optional) splits the recording into
    instances (EmoPain: exercise type), windows never straddle a segment boundary.
    """

    participant: str
    name: str
    values: np.ndarray
    schema: Schema
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    segment: np.ndarray | None = None
    path: str | None = None

    @property
    def n_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.schema.sample_rate_hz


@dataclass(frozen=True)
class Dataset:
    """A set of recordings with one schema and the class names of each task."""

    recordings: tuple[Recording, ...]
    schema: Schema
    label_names: dict[str, list[str]]  # task → class names (index = integer label)
    format: str  # "emopain" | "csv"
    root: str = ""

    @property
    def participants(self) -> list[str]:
        return sorted({r.participant for r in self.recordings})

    def by_participant(self, ids: set[str] | list[str]) -> "Dataset":
        keep = set(ids)
        return Dataset(tuple(r for r in self.recordings if r.participant in keep), self.schema,
                       self.label_names, self.format, self.root)
