"""The channel schema: which numbers a model sees, in which order, in which unit.

EmoPain order (DESIGN.md): 13 joint angles, their 13 energies, 4 back sEMG envelopes.
Angle names and their incident/end joints follow the table in the ALANet paper.
This module is the single source of truth for the trainer, the converter and the
gateway; a bundle records the schema it was trained with and the gateway refuses a
wearable whose layout does not match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

SCHEMA_VERSION = 1
EMOPAIN_SAMPLE_RATE_HZ = 60.0


@dataclass(frozen=True)
class Channel:
    name: str
    unit: str
    kind: str  # "angle" | "energy" | "emg" | "other"
    group: str  # body-part group (body attention, per-part encoders, part dropout)


# (name, incident joints / end joints) from the paper's angle table.
EMOPAIN_ANGLES: tuple[tuple[str, str], ...] = (
    ("left_full_body_flexion", "left shoulder, left hip / left knee"),
    ("right_full_body_flexion", "right shoulder, right hip / right knee"),
    ("left_inner_body_flexion", "left shoulder, left hip / left knee (inner)"),
    ("right_inner_body_flexion", "right shoulder, right hip / right knee (inner)"),
    ("left_knee_flexion", "left hip, left knee / left ankle"),
    ("right_knee_flexion", "right hip, right knee / right ankle"),
    ("left_elbow_flexion", "left shoulder, left elbow / left wrist"),
    ("right_elbow_flexion", "right shoulder, right elbow / right wrist"),
    ("left_shoulder_flexion", "left elbow, left shoulder / left hip"),
    ("right_shoulder_flexion", "right elbow, right shoulder / right hip"),
    ("left_lateral_bend", "left shoulder, spine / left hip"),
    ("right_lateral_bend", "right shoulder, spine / right hip"),
    ("neck_flexion", "head, neck / spine"),
)
EMOPAIN_EMG: tuple[str, ...] = (
    "emg_upper_left",
    "emg_upper_right",
    "emg_lower_left",
    "emg_lower_right",
)
EMG_GROUP = "emg"


@dataclass(frozen=True)
class Schema:
    """An ordered channel list, its sample rate and its body-part groups."""

    channels: tuple[Channel, ...]
    sample_rate_hz: float
    name: str = "custom"
    version: int = SCHEMA_VERSION
    _index: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.channels]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate channel names: {', '.join(dupes)}")
        if not self.sample_rate_hz > 0:
            raise ValueError(f"sample_rate_hz must be > 0, got {self.sample_rate_hz}")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.channels]

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def index(self, name: str) -> int:
        return self._index[name]

    def indices(self, kind: str) -> list[int]:
        return [i for i, c in enumerate(self.channels) if c.kind == kind]

    @property
    def groups(self) -> dict[str, list[int]]:
        """Body-part group name → channel indices, in first-appearance order."""
        out: dict[str, list[int]] = {}
        for i, c in enumerate(self.channels):
            out.setdefault(c.group, []).append(i)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "sample_rate_hz": self.sample_rate_hz,
            "channels": [{"name": c.name, "unit": c.unit, "kind": c.kind, "group": c.group} for c in self.channels],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Schema":
        try:
            chans = tuple(Channel(str(c["name"]), str(c["unit"]), str(c["kind"]), str(c["group"])) for c in d["channels"])
            return cls(chans, float(d["sample_rate_hz"]), name=str(d.get("name", "custom")), version=int(d.get("version", 1)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad channel schema: missing or malformed field {exc}") from None


def emopain_schema(sample_rate_hz: float = EMOPAIN_SAMPLE_RATE_HZ) -> Schema:
    """The 30-channel EmoPain schema: 13 angles (rad), 13 energies (rad²/s²), 4 sEMG (a.u.)."""
    angles = [Channel(n, "rad", "angle", n) for n, _ in EMOPAIN_ANGLES]
    energies = [Channel(f"{n}_energy", "rad^2/s^2", "energy", n) for n, _ in EMOPAIN_ANGLES]
    emg = [Channel(n, "a.u.", "emg", EMG_GROUP) for n in EMOPAIN_EMG]
    return Schema(tuple(angles + energies + emg), sample_rate_hz, name="emopain")


def generic_schema(names: Sequence[str], sample_rate_hz: float, groups: Mapping[str, Sequence[str]] | None = None) -> Schema:
    """A schema for user CSV data: every channel its own group unless ``groups`` says otherwise."""
    group_of = {ch: g for g, chans in (groups or {}).items() for ch in chans}
    unknown = sorted(set(group_of) - set(names))
    if unknown:
        raise ValueError(f"channel_groups names unknown channels: {', '.join(unknown)}")
    return Schema(tuple(Channel(n, "a.u.", "other", group_of.get(n, n)) for n in names), sample_rate_hz, name="custom")


EMOPAIN = emopain_schema()
N_ANGLES = len(EMOPAIN_ANGLES)
N_EMG = len(EMOPAIN_EMG)
