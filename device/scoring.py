"""Scoring predictions against ground truth: windows (macro F1) and streams (episodes).

One definition of each, used by the trainer, the converter's parity check, the
bundle session check, ``alanet demo`` and the tests (numpy only, no TensorFlow);
:func:`score_windows` runs a recording's window probabilities through the gateway's
decision rule and scores the alerts.

**Windows.** Macro F1 is the mean F1 over the classes *present in the ground truth*:
a class nobody in the evaluated set has cannot be scored (a one-class LOSO fold is
not capped at 1/n), and predicting it is already paid for in the recall of the
classes that are present.

**Streams.** A detector is scored the way event detectors are, so that a detector that
keeps an alert up for minutes, or always says "protective", cannot score well:

- an episode (a run of protective frames) is *hit* only when an alert is **raised**
  (the moment the gateway decided it: the end of the confirming window) inside it,
  give or take ``tolerance_s``;
- every raise outside any episode (± ``tolerance_s``) is a *false alarm*;
- the *active state* (from the centre of the first window of the raising run to the
  centre of the window that confirmed the clear) is compared with the ground truth
  frame by frame: active-time precision and recall.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

DEFAULT_TOLERANCE_S = 1.5  # half an EmoPain window: label jitter and the window's own extent


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> float:
    """Mean F1 over the classes present in ``y_true`` (labels < 0 are ignored)."""
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    keep = y_true >= 0
    y_true, y_pred = y_true[keep], y_pred[keep]
    f1s = [f1_of_class(y_true, y_pred, int(c)) for c in np.unique(y_true)]
    return float(np.mean(f1s)) if f1s else 0.0


def f1_of_class(y_true: np.ndarray, y_pred: np.ndarray, c: int) -> float:
    """F1 of class ``c`` (0 when it is neither present nor predicted)."""
    tp = int(np.sum((y_true == c) & (y_pred == c)))
    fp = int(np.sum((y_true != c) & (y_pred == c)))
    fn = int(np.sum((y_true == c) & (y_pred != c)))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


@dataclass(frozen=True)
class Span:
    """A stretch of session time in seconds, [start, end)."""

    start: float
    end: float


@dataclass(frozen=True)
class Alert:
    """One raised alert: when it was decided, and the active stretch it stands for."""

    raised_at: float  # session s: end of the window that confirmed the raise
    active: Span  # session s: centre of the first raising window → centre of the clear-confirming window


@dataclass(frozen=True)
class StreamScore:
    """How a stream of alerts matches the ground-truth episodes of one or more sessions."""

    session_s: float
    episodes: int
    alerts: int
    hits: int
    false_alarms: int
    active_s: float  # time the alert state was active
    truth_s: float  # time of ground-truth protective behaviour
    overlap_s: float  # both at once
    tolerance_s: float
    detection_delays_s: list[float] = field(default_factory=list)

    @property
    def misses(self) -> int:
        return self.episodes - self.hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.episodes if self.episodes else 0.0

    @property
    def false_alarms_per_10min(self) -> float:
        return 600.0 * self.false_alarms / self.session_s if self.session_s > 0 else 0.0

    @property
    def active_precision(self) -> float:
        return self.overlap_s / self.active_s if self.active_s > 0 else 0.0

    @property
    def active_recall(self) -> float:
        return self.overlap_s / self.truth_s if self.truth_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "misses": self.misses, "hit_rate": round(self.hit_rate, 4),
                "false_alarms_per_10min": round(self.false_alarms_per_10min, 3),
                "active_precision": round(self.active_precision, 4), "active_recall": round(self.active_recall, 4)}

    @staticmethod
    def combine(scores: Sequence["StreamScore"]) -> "StreamScore":
        """Several sessions as one: counts and times add up."""
        if not scores:
            raise ValueError("no scores to combine")
        return StreamScore(*(sum(getattr(s, k) for s in scores) for k in (
            "session_s", "episodes", "alerts", "hits", "false_alarms", "active_s", "truth_s", "overlap_s")),
                           scores[0].tolerance_s, [d for s in scores for d in s.detection_delays_s])


def episodes_from_labels(labels: np.ndarray, fs: float, positive: int = 1) -> list[Span]:
    """Runs of ``positive`` frames → spans in seconds."""
    lab = (np.asarray(labels) == positive).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], lab, [0]])))
    return [Span(a / fs, b / fs) for a, b in zip(edges[::2], edges[1::2])]


def alerts_from_events(events: Iterable[Any], half_window_s: float, session_end: float) -> list[Alert]:
    """Raised/cleared events (objects or alert payload dicts with ``state``, ``t_start``,
    ``t_end``) in order → alerts. A raise's ``t_start`` is the start of the first window
    of its run; a clear's ``t_end`` is the end of the window that confirmed it."""
    def get(e: Any, k: str) -> Any:
        return e[k] if isinstance(e, Mapping) else getattr(e, k)

    out: list[Alert] = []
    open_: Any = None
    for e in sorted(events, key=lambda e: float(get(e, "t_end"))):
        state = get(e, "state")
        if state == "raised" and open_ is None:
            open_ = e
        elif state == "cleared" and open_ is not None:
            out.append(_alert(open_, float(get(e, "t_end")) - half_window_s, half_window_s, get))
            open_ = None
    if open_ is not None:
        out.append(_alert(open_, session_end, half_window_s, get))
    return out


def _alert(raise_event: Any, end: float, half_window_s: float, get) -> Alert:
    start = float(get(raise_event, "t_start")) + half_window_s
    return Alert(float(get(raise_event, "t_end")), Span(start, max(start, end)))


def score_stream(episodes: Sequence[Span], alerts: Sequence[Alert], session_s: float,
                 tolerance_s: float = DEFAULT_TOLERANCE_S, resolution_s: float = 0.01) -> StreamScore:
    """Score one session's alerts against its ground-truth episodes (see the module docstring)."""
    hits, delays = 0, []
    matched = [False] * len(alerts)
    for ep in episodes:
        inside = [i for i, a in enumerate(alerts) if ep.start - tolerance_s <= a.raised_at <= ep.end + tolerance_s]
        for i in inside:
            matched[i] = True
        if inside:
            hits += 1
            delays.append(round(max(0.0, alerts[inside[0]].raised_at - ep.start), 3))
    false_alarms = sum(1 for m in matched if not m)
    n = max(1, int(np.ceil(session_s / resolution_s)))
    truth = _cover(episodes, n, resolution_s)
    active = _cover([a.active for a in alerts], n, resolution_s)
    return StreamScore(float(session_s), len(episodes), len(alerts), hits, false_alarms,
                       float(active.sum()) * resolution_s, float(truth.sum()) * resolution_s,
                       float(np.sum(truth & active)) * resolution_s, float(tolerance_s), delays)


def score_windows(task: str, decision: Mapping[str, Any] | None, labels: Sequence[str], proba: np.ndarray,
                  starts: np.ndarray, window: int, fs: float, frame_labels: np.ndarray,
                  positive: int = 1) -> StreamScore:
    """Score a recording the way the gateway runs it: the windows' probabilities ``proba``
    (window ``k`` covers frames ``starts[k]`` … ``starts[k] + window``) through a fresh
    decider for ``decision``, the resulting alerts against the runs of ``positive`` in the
    per-frame truth ``frame_labels``."""
    from alanet.device.decisions import decide_offline

    st = np.asarray(starts)
    session_s = len(frame_labels) / fs
    events = decide_offline(task, decision, labels, proba, st / fs, (st + window) / fs)
    return score_stream(episodes_from_labels(frame_labels, fs, positive),
                        alerts_from_events(events, window / fs / 2, session_s), session_s)


def _cover(spans: Iterable[Span], n: int, res: float) -> np.ndarray:
    out = np.zeros(n, bool)
    for s in spans:
        a, b = max(0, int(round(s.start / res))), min(n, int(round(s.end / res)))
        if b > a:
            out[a:b] = True
    return out
