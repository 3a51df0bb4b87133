"""From per-window probabilities to alert events.

A model's per-window output is noisy; a clinician wants one alert when protective
behaviour starts and one when it ends. Two small state machines, configured by the
bundle manifest's ``decision`` section:

- :class:`ProtectiveDecider` (2-class task): exponential smoothing of the positive
  class probability, then hysteresis (raise above ``raise_threshold``, clear below
  ``clear_threshold``) with minimum durations counted in windows, and no raise while
  the wearer's stream behind a window is shorter than ``warmup_s`` seconds (its
  per-wearer statistics are then still mostly the population prior).
- :class:`PainDecider` (3-class task): the mean class probabilities over the last
  ``horizon_windows`` windows; the level changes only after the new level has led for
  ``min_change_windows`` consecutive windows.

Both are pure (no I/O, no clock): feed them windows, get :class:`Event` objects.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np

PROTECTIVE = "protective"
PAIN = "pain"
RAISED = "raised"
CLEARED = "cleared"


@dataclass(frozen=True)
class ProtectiveRule:
    """Hysteresis settings for the protective-behaviour task."""

    class_index: int = 1
    smoothing_alpha: float = 0.5  # weight of the newest window (1 = no smoothing)
    raise_threshold: float = 0.6
    clear_threshold: float = 0.4
    min_raise_windows: int = 2  # smoothed p >= raise_threshold for this many windows in a row
    min_clear_windows: int = 2  # smoothed p < clear_threshold for this many windows in a row
    class_name: str | None = None  # label of class_index (informational)
    window_threshold: float = 0.5  # one window is positive when p >= this (calibrated in training)
    class_weights: tuple[float, ...] | None = None  # multi-class prior correction before p[class_index]
    calibration: str | None = None  # how the calibrated values were chosen (informational)
    warmup_s: float = 0.0  # no raise from a window with less of the wearer's stream behind it (seconds)

    def __post_init__(self) -> None:
        w = self.warmup_s
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
            raise ValueError(f"decision.warmup_s must be a number of seconds >= 0, got {w!r}")
        object.__setattr__(self, "warmup_s", float(w))
        if not 0 < self.smoothing_alpha <= 1:
            raise ValueError(f"decision.smoothing_alpha must lie in (0, 1], got {self.smoothing_alpha}")
        if not 0 <= self.clear_threshold <= self.raise_threshold <= 1:
            raise ValueError("decision thresholds must satisfy 0 <= clear_threshold <= raise_threshold <= 1 "
                             f"(got clear {self.clear_threshold}, raise {self.raise_threshold})")
        if self.min_raise_windows < 1 or self.min_clear_windows < 1:
            raise ValueError("decision.min_raise_windows and min_clear_windows must be >= 1")
        if self.class_index < 0:
            raise ValueError(f"decision.class_index must be >= 0, got {self.class_index}")
        if not 0 < self.window_threshold < 1:
            raise ValueError(f"decision.window_threshold must lie in (0, 1), got {self.window_threshold}")
        _check_weights(self)


@dataclass(frozen=True)
class PainRule:
    """Level-change settings for the pain task."""

    horizon_windows: int = 8
    min_change_windows: int = 4
    class_weights: tuple[float, ...] | None = None  # prior correction: p_c · w_c before argmax (calibrated)
    calibration: str | None = None  # how class_weights were chosen (informational)

    def __post_init__(self) -> None:
        if self.horizon_windows < 1 or self.min_change_windows < 1:
            raise ValueError("decision.horizon_windows and min_change_windows must be >= 1")
        _check_weights(self)


def _check_weights(rule: Any) -> None:
    if rule.class_weights is None:
        return
    w = tuple(float(v) for v in rule.class_weights)
    if not w or not all(np.isfinite(v) and v > 0 for v in w):
        raise ValueError("decision.class_weights must be positive finite numbers")
    object.__setattr__(rule, "class_weights", w)


@dataclass(frozen=True)
class Event:
    """One alert-worthy change for one wearer.

    ``type`` is the task: ``protective`` (``state`` raised/cleared; so is any other
    hysteresis task) or ``pain`` (``state`` the new level's label). ``t_start``/``t_end`` are stream times in seconds: for a raise,
    the start of the first window of the run that crossed the threshold and the end of
    the window that confirmed it; for a clear, the episode's start and the end of the
    confirming window. ``window`` is the index of the confirming window.
    """

    type: str
    state: str
    probability: float
    t_start: float
    t_end: float
    window: int
    level: int | None = None


def _from_mapping(cls: type, d: Mapping[str, Any] | None) -> Any:
    d = dict(d or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown decision key(s): {', '.join(unknown)}")
    return cls(**d)


def protective_rule(d: Mapping[str, Any] | None) -> ProtectiveRule:
    """Build a :class:`ProtectiveRule` from a manifest ``decision`` mapping."""
    return _from_mapping(ProtectiveRule, d)


def pain_rule(d: Mapping[str, Any] | None) -> PainRule:
    """Build a :class:`PainRule` from a manifest ``decision`` mapping."""
    return _from_mapping(PainRule, d)


class ProtectiveDecider:
    """EMA smoothing + hysteresis + minimum durations → raised/cleared events."""

    def __init__(self, rule: ProtectiveRule, event_type: str = PROTECTIVE) -> None:
        self.rule = rule
        self.event_type = event_type
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new session). An active episode is dropped silently."""
        self.smoothed: float | None = None
        self.active = False
        self._run = 0  # consecutive windows on the "other side"
        self._run_start = 0.0  # t_start of the first window of that run
        self._episode_start = 0.0
        self._n = 0

    def reset_smoothing(self) -> None:
        """Forget the smoothed probability and the run in progress; an open episode stays open.

        For a window that could not be classified: the next window starts the smoothing
        afresh, and the episode can still be cleared normally.
        """
        self.smoothed = None
        self._run = 0

    def update(self, probs: Sequence[float], t_start: float, t_end: float, *,
               seen_s: float | None = None) -> Event | None:
        """Feed one window's class probabilities; return an event when the state flips.

        ``seen_s``: seconds of this wearer's stream behind the window (default ``t_end``:
        a recording that starts with its statistics). While it is below the rule's
        ``warmup_s`` no run towards a raise starts; clearing an open episode is unaffected.
        """
        r = self.rule
        if r.class_weights is not None:
            probs = reweight(np.asarray(probs, np.float64), r.class_weights)
        p = float(probs[r.class_index])
        self.smoothed = p if self.smoothed is None else r.smoothing_alpha * p + (1 - r.smoothing_alpha) * self.smoothed
        s = self.smoothed
        idx = self._n
        self._n += 1
        if not self.active:
            if s >= r.raise_threshold and (t_end if seen_s is None else seen_s) >= r.warmup_s:
                if self._run == 0:
                    self._run_start = t_start
                self._run += 1
                if self._run >= r.min_raise_windows:
                    self.active, self._run = True, 0
                    self._episode_start = self._run_start
                    return Event(self.event_type, RAISED, s, self._episode_start, t_end, idx)
            else:
                self._run = 0
        else:
            if s < r.clear_threshold:
                self._run += 1
                if self._run >= r.min_clear_windows:
                    self.active, self._run = False, 0
                    return Event(self.event_type, CLEARED, s, self._episode_start, t_end, idx)
            else:
                self._run = 0
        return None


class PainDecider:
    """Mean probabilities over a horizon → level changes confirmed over several windows."""

    def __init__(self, rule: PainRule, labels: Sequence[str]) -> None:
        self.rule = rule
        self.labels = list(labels)
        self.reset()

    def reset(self) -> None:
        self._hist: deque[np.ndarray] = deque(maxlen=self.rule.horizon_windows)
        self.level: int | None = None
        self._candidate: int | None = None
        self._run = 0
        self._run_start = 0.0
        self._level_start = 0.0
        self._n = 0
        self.smoothed: np.ndarray | None = None

    def reset_smoothing(self) -> None:
        """Forget the averaging horizon and any pending change; the confirmed level stays."""
        self._hist.clear()
        self.smoothed = None
        self._candidate, self._run = None, 0

    def update(self, probs: Sequence[float], t_start: float, t_end: float, *,
               seen_s: float | None = None) -> Event | None:
        """Feed one window; return an event when the confirmed pain level changes (``seen_s`` is not used)."""
        p = np.asarray(probs, dtype=np.float64)
        self._hist.append(p)
        mean = np.mean(self._hist, axis=0)
        if self.rule.class_weights is not None:
            mean = reweight(mean, self.rule.class_weights)
        self.smoothed = mean
        lead = int(np.argmax(mean))
        idx = self._n
        self._n += 1
        if lead == self.level:
            self._candidate, self._run = None, 0
            return None
        if lead != self._candidate:
            self._candidate, self._run, self._run_start = lead, 0, t_start
        self._run += 1
        if self._run >= self.rule.min_change_windows:
            self.level, self._candidate, self._run = lead, None, 0
            self._level_start = self._run_start
            name = self.labels[lead] if lead < len(self.labels) else str(lead)
            return Event(PAIN, name, float(mean[lead]), self._level_start, t_end, idx, level=lead)
        return None


def reweight(probs: np.ndarray, class_weights: Sequence[float]) -> np.ndarray:
    """Prior correction: probabilities times per-class weights, renormalised (last axis)."""
    w = np.asarray(class_weights, np.float64)
    p = np.asarray(probs, np.float64) * w
    return p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-12)


def window_labels(probs: np.ndarray, decision: Mapping[str, Any] | None) -> np.ndarray:
    """Each window's class under a calibrated decision rule (``[N, K]`` probabilities → ``[N]``).

    ``window_threshold`` (+ ``class_index``): class ``class_index`` when its probability
    reaches the threshold, else the most probable other class; ``class_weights``: argmax
    of the prior-corrected probabilities; neither: argmax.
    """
    p = np.asarray(probs, np.float64)
    d = dict(decision or {})
    if p.ndim != 2 or p.shape[0] == 0:
        return np.zeros(p.shape[:1], np.int64)
    if d.get("class_weights") is not None:
        return reweight(p, d["class_weights"]).argmax(axis=1)
    if "window_threshold" in d:
        c = int(d.get("class_index", 1))
        others = p.copy()
        others[:, c] = -np.inf
        return np.where(p[:, c] >= float(d["window_threshold"]), c, others.argmax(axis=1)).astype(np.int64)
    return p.argmax(axis=1)


def make_decider(task: str, decision: Mapping[str, Any] | None, labels: Sequence[str]) -> ProtectiveDecider | PainDecider:
    """The decider for a bundle's task and its manifest rule.

    ``pain`` gets level changes; ``protective`` and any other task get hysteresis on
    one class (events of type ``task``).
    """
    if task == PAIN:
        return PainDecider(pain_rule(decision), labels)
    return ProtectiveDecider(protective_rule(decision), event_type=task)


def decide_offline(task: str, decision: Mapping[str, Any] | None, labels: Sequence[str],
                   probs: np.ndarray, t_start: Sequence[float], t_end: Sequence[float]) -> list[Event]:
    """Run a fresh decider over a whole sequence of windows (for tests and evaluation)."""
    d = make_decider(task, decision, labels)
    out = []
    for p, a, b in zip(probs, t_start, t_end):
        e = d.update(p, float(a), float(b))
        if e is not None:
            out.append(e)
    return out
