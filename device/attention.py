"""What drove a decision: ALANet's temporal and bodily attention, read next to the probabilities.

A bundle converted from a model with attention (ALANet, ALANet per part, BANet) has
two extra outputs besides the class probabilities, named in the manifest's
``attention`` block:

- ``temporal``: one weight per frame of the window (softmax over time, sums to 1):
  *when* in the window the model looked;
- ``body``: one weight per body part (``axis: "parts"``, names given) or per encoder
  unit (``axis: "units"``, plain ALANet, whose bodily attention weighs its encoder's
  units, not body parts): *what* it looked at.

Baselines (Stacked-LSTM, classic models) have no ``attention`` block and their
payloads simply omit it. :func:`summarise` turns the raw weights into the small,
JSON-ready :class:`Attention` that alerts, state messages and the session log carry.
No I/O, no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

TOP_PARTS = 3  # body parts carried in a payload
PROFILE_BINS = 12  # temporal profile resolution carried in a payload

# Readable names of the EmoPain body-part groups (schema group names) for pages and reports.
_PART_LABELS = {
    "left_full_body_flexion": "left full-body flexion", "right_full_body_flexion": "right full-body flexion",
    "left_inner_body_flexion": "left trunk flexion", "right_inner_body_flexion": "right trunk flexion",
    "left_knee_flexion": "left knee", "right_knee_flexion": "right knee",
    "left_elbow_flexion": "left elbow", "right_elbow_flexion": "right elbow",
    "left_shoulder_flexion": "left shoulder", "right_shoulder_flexion": "right shoulder",
    "left_lateral_bend": "left lateral bend", "right_lateral_bend": "right lateral bend",
    "neck_flexion": "neck flexion", "emg": "back sEMG",
    "emg_upper_left": "upper-back sEMG (left)", "emg_upper_right": "upper-back sEMG (right)",
    "emg_lower_left": "lower-back sEMG (left)", "emg_lower_right": "lower-back sEMG (right)",
}


def part_label(name: str) -> str:
    """A readable label for a body-part group name (``emg_lower_left+emg_lower_right`` → lower-back sEMG)."""
    if name in _PART_LABELS:
        return _PART_LABELS[name]
    pieces = name.split("+")
    if pieces and all(p.startswith("emg_lower") for p in pieces):
        return "lower-back sEMG"
    if pieces and all(p.startswith("emg_upper") for p in pieces):
        return "upper-back sEMG"
    return " + ".join(_PART_LABELS.get(p, p.replace("_", " ")) for p in pieces)


@dataclass(frozen=True)
class AttentionSpec:
    """The manifest's ``attention`` block: which model outputs hold which weights."""

    temporal_output: str  # signature output name of the temporal weights [1, L] or [1, L, 1]
    body_output: str  # signature output name of the bodily weights [1, P] or [1, P, 1]
    probabilities_output: str  # signature output name of the class probabilities
    length: int  # L, frames per window
    axis: str  # "parts" | "units"
    names: tuple[str, ...]  # part names (axis "parts") or "unit 0".. (axis "units")

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "AttentionSpec | None":
        """The spec of a bundle, or ``None`` for a model without attention outputs."""
        a = manifest.get("attention")
        if not a:
            return None
        outs, body = a["outputs"], a["body"]
        names = tuple(body["names"]) if body["axis"] == "parts" else tuple(f"unit {i}" for i in range(body["count"]))
        return cls(outs["temporal"], outs["body"], outs["probabilities"], int(a["temporal"]["length"]),
                   str(body["axis"]), names)


@dataclass(frozen=True)
class Attention:
    """One window's attention, summarised for payloads (see :func:`summarise`)."""

    peak_frame: int  # frame of the largest temporal weight (0 = first frame of the window)
    peak_s: float  # the same in seconds from the window's start
    window_s: float  # window length in seconds
    profile: tuple[float, ...]  # temporal weight summed over PROFILE_BINS equal slices (sums to ~1)
    axis: str  # "parts" | "units"
    top: tuple[tuple[str, float], ...]  # (part name, weight), largest first; empty for axis "units"

    def to_payload(self) -> dict[str, Any]:
        """The JSON object carried as ``attention`` in alert and state payloads."""
        d: dict[str, Any] = {"peak_s": round(self.peak_s, 3), "peak_frame": self.peak_frame,
                             "window_s": round(self.window_s, 3), "profile": [round(v, 4) for v in self.profile],
                             "body_axis": self.axis}
        if self.top:
            d["body"] = [{"part": n, "label": part_label(n), "weight": round(w, 4)} for n, w in self.top]
        return d


@lru_cache(maxsize=32)
def _bin_starts(n: int, bins: int) -> np.ndarray:
    return np.linspace(0, n, num=min(bins, n) + 1).round().astype(np.intp)[:-1]


def summarise(temporal: np.ndarray, body: np.ndarray, spec: AttentionSpec, sample_rate_hz: float,
              top: int = TOP_PARTS, bins: int = PROFILE_BINS) -> Attention | None:
    """Peak, profile and top body parts of one window's raw weights (``None`` if they are not finite)."""
    t = np.asarray(temporal).reshape(-1)
    b = np.asarray(body).reshape(-1)
    if t.size == 0 or not np.isfinite(float(t.sum()) + float(b.sum())):
        return None
    peak = int(t.argmax())
    profile = tuple(np.add.reduceat(t.astype(np.float64), _bin_starts(t.size, bins)).tolist())
    tops: tuple[tuple[str, float], ...] = ()
    if spec.axis == "parts" and b.size == len(spec.names):
        order = np.argsort(-b, kind="stable")[:top].tolist()
        weights = b.tolist()
        tops = tuple((spec.names[i], weights[i]) for i in order)
    return Attention(peak, (peak + 0.5) / sample_rate_hz, t.size / sample_rate_hz, profile, spec.axis, tops)


def describe(att: Mapping[str, Any] | None) -> str:
    """A one-line reading of an ``attention`` payload: "mostly back sEMG and left knee, 1.2 s into the window"."""
    if not att:
        return ""
    parts = [p.get("label") or p.get("part") for p in att.get("body") or []][:2]
    when = f"{float(att.get('peak_s', 0.0)):.1f} s into the window"
    return f"mostly {' and '.join(parts)}, {when}" if parts else f"peak {when}"


def group_names(groups: Sequence[Sequence[int]], channel_names: Sequence[str],
                channel_groups: Sequence[str]) -> list[str]:
    """A name per body-part group of channel indices: the schema's group name when the group is
    exactly that schema group, else the channel names joined by ``+`` (padding indices ``-1`` ignored)."""
    out = []
    for g in groups:
        idx = [int(i) for i in g if int(i) >= 0]
        names = {channel_groups[i] for i in idx}
        whole = len(names) == 1 and set(idx) == {i for i, n in enumerate(channel_groups) if n in names}
        out.append(names.pop() if whole else "+".join(channel_names[i] for i in idx))
    return out
