"""Decision calibration on the inner-validation participants (never the test ones).

A model trained with balanced class weights (or oversampling) behaves as if every
class were equally common; in the field the positive class is rare, and argmax over
its probabilities over-predicts it. So after training, the decision rule is chosen on
the validation windows:

- **two classes**: a threshold on the positive class's probability, the one that
  maximises validation macro F1 (the middle of the best plateau, which is stable on a
  small validation set);
- **more classes**: prior correction, p_c · w_c with w = (training prevalence) ÷
  (prevalence the loss saw), kept only when it raises validation macro F1.

The result is a ``decision`` mapping (``window_threshold`` + ``class_index``, or
``class_weights``) that the run saves, the bundle manifest carries and
:func:`alanet.device.decisions.window_labels` applies everywhere: evaluation, parity,
the gateway and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from alanet.device.decisions import window_labels
from alanet.device.scoring import StreamScore, macro_f1

# Finer near 1: a model trained with balanced class weights puts a rare class's threshold high.
THRESHOLDS = np.round(np.concatenate([np.arange(0.02, 0.985, 0.01), [0.985, 0.99, 0.995, 0.998]]), 3)


def positive_class(n_classes: int) -> int:
    """The class a two-class threshold is on: the last one (protective, or the generic task's)."""
    return n_classes - 1


def calibrate(p_val: np.ndarray, y_val: np.ndarray, n_classes: int, train_counts: np.ndarray,
              class_weights: np.ndarray, where: str = "validation") -> dict[str, Any]:
    """The decision rule chosen on validation probabilities ``p_val`` [N, K] and labels ``y_val``.

    ``train_counts`` are the fitting windows per class, ``class_weights`` the loss weights
    they were trained with. Returns ``{}`` (argmax) when there is nothing to calibrate on.
    """
    p = np.asarray(p_val, np.float64)
    y = np.asarray(y_val, np.int64)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return {}
    base = macro_f1(y, p.argmax(axis=1))
    if n_classes == 2:
        c = positive_class(n_classes)
        scores = np.array([macro_f1(y, window_labels(p, {"class_index": c, "window_threshold": float(t)}))
                           for t in THRESHOLDS])
        best = scores.max()
        t = float(_plateau_middle(THRESHOLDS, scores >= best - 1e-12))
        return {"class_index": c, "window_threshold": t,
                "calibration": f"threshold on {where} macro F1 {best:.3f} (argmax {base:.3f}, {len(y)} windows)"}
    natural = np.asarray(train_counts, np.float64)
    seen = natural * np.asarray(class_weights, np.float64)
    if natural.sum() <= 0 or seen.sum() <= 0 or np.any(natural <= 0):
        return {}
    w = (natural / natural.sum()) / (seen / seen.sum())
    w = w / w.mean()
    corrected = macro_f1(y, window_labels(p, {"class_weights": w.tolist()}))
    if corrected > base + 1e-12:
        return {"class_weights": [round(float(v), 6) for v in w],
                "calibration": f"prior correction on {where} macro F1 {corrected:.3f} (argmax {base:.3f}, "
                               f"{len(y)} windows)"}
    return {"calibration": f"argmax kept: prior correction on {where} macro F1 {corrected:.3f} "
                           f"<= argmax {base:.3f} ({len(y)} windows)"}


def _plateau_middle(values: np.ndarray, good: np.ndarray) -> float:
    """The middle value of the longest run of ``good`` (the first run on a tie)."""
    best_len, best_mid, start = 0, float(values[int(np.argmax(good))]), None
    for i, g in enumerate(list(good) + [False]):
        if g and start is None:
            start = i
        elif not g and start is not None:
            if i - start > best_len:
                best_len, best_mid = i - start, float(values[(start + i - 1) // 2])
            start = None
    return best_mid


@dataclass(frozen=True)
class Stream:
    """A validation recording as the gateway sees it: windows at every stride over the whole
    recording (no exercise boundaries), their probabilities, and the per-frame truth."""

    proba: np.ndarray  # [W, K]
    starts: np.ndarray  # [W] first frame of each window
    labels: np.ndarray  # [T] per-frame class (IGNORE = -1 allowed)
    window: int
    sample_rate_hz: float


def has_episodes(streams: Sequence[Stream], c: int) -> bool:
    """Whether any stream holds an episode of class ``c``."""
    from alanet.device.scoring import episodes_from_labels

    return any(episodes_from_labels(s.labels, s.sample_rate_hz, positive=c) for s in streams)


def score_streams(streams: Sequence[Stream], rule: dict[str, Any], task: str, labels: Sequence[str],
                  c: int) -> StreamScore:
    """``rule`` played over every stream, scored as one (the toolkit's stream scorer)."""
    from alanet.device.scoring import score_windows

    return StreamScore.combine([score_windows(task, rule, labels, s.proba, s.starts, s.window, s.sample_rate_hz,
                                              s.labels, positive=c) for s in streams])


# Hysteresis candidates around the calibrated window threshold.
SMOOTHING = (1.0, 0.7, 0.5)
RAISE_FACTORS = (0.8, 1.0, 1.2)
CLEAR_FACTORS = (0.5, 0.75)
MIN_WINDOWS = (1, 2, 3)


def calibrate_stream(streams: Sequence[Stream], decision: dict[str, Any], task: str,
                     labels: Sequence[str]) -> dict[str, Any]:
    """The alert rule (smoothing, raise/clear thresholds, minimum durations) that scores best
    on the validation streams with the toolkit's stream scorer: the mean of the event F1
    (episodes hit by a raise inside them vs raises that hit none) and the active-time F1.
    A ``warmup_s`` in ``decision`` holds for every candidate (each stream is a wearer from
    its start), so the thresholds chosen fit it.

    Returns ``decision`` updated with the chosen rule and a note, or unchanged when the
    streams hold no protective episode."""

    c = int(decision.get("class_index", positive_class(2)))
    t = float(decision.get("window_threshold", 0.5))
    if not has_episodes(streams, c):
        return decision
    best: tuple[float, dict[str, Any], StreamScore] | None = None
    for alpha in SMOOTHING:
        for rf in RAISE_FACTORS:
            raise_t = float(np.clip(rf * t, 0.02, 0.998))
            for cf in CLEAR_FACTORS:
                for n_raise in MIN_WINDOWS:
                    for n_clear in MIN_WINDOWS:
                        rule = {**decision, "smoothing_alpha": alpha, "raise_threshold": round(raise_t, 4),
                                "clear_threshold": round(cf * raise_t, 4), "min_raise_windows": n_raise,
                                "min_clear_windows": n_clear}
                        total = score_streams(streams, rule, task, labels, c)
                        value = stream_objective(total)
                        if best is None or value > best[0] + 1e-12:
                            best = (value, rule, total)
    assert best is not None
    value, rule, total = best
    warmup = float(decision.get("warmup_s", 0.0))
    note = (f"; alert rule{f' (with a {warmup:g} s warm-up)' if warmup else ''} on {len(streams)} validation "
            f"stream(s): {total.hits}/{total.episodes} episodes hit, "
            f"{total.false_alarms_per_10min:.1f} false alarms per 10 min, active-time precision "
            f"{total.active_precision:.2f} / recall {total.active_recall:.2f}")
    return {**rule, "calibration": str(decision.get("calibration", "")) + note}


@dataclass(frozen=True)
class StreamTarget:
    """What a protective alert stream must do: at most ``max_false_alarms_per_10min`` raises
    outside any episode and an active state at least ``min_active_precision`` right; among
    the rules that do, the one that hits the most episodes is best."""

    max_false_alarms_per_10min: float = 2.0
    min_active_precision: float = 0.7

    def met_by(self, s: StreamScore) -> bool:
        return s.false_alarms_per_10min <= self.max_false_alarms_per_10min and \
            s.active_precision >= self.min_active_precision


# The wide rule grid (2,016 rules): absolute raise thresholds, the clear threshold as a share of it.
WIDE_SMOOTHING = (1.0, 0.7, 0.5, 0.3)
WIDE_RAISE = tuple(round(float(t), 2) for t in np.arange(0.30, 0.951, 0.05))
WIDE_CLEAR_SHARE = (0.5, 0.75, 0.9)
WIDE_RAISE_WINDOWS = (1, 2, 3, 4)
WIDE_CLEAR_WINDOWS = (1, 2, 3)


def wide_rules(decision: dict[str, Any]) -> list[dict[str, Any]]:
    """``decision`` with each alert rule of the wide grid (the window decision and the rest kept)."""
    return [{**decision, "smoothing_alpha": a, "raise_threshold": r, "clear_threshold": round(share * r, 4),
             "min_raise_windows": n_raise, "min_clear_windows": n_clear}
            for a in WIDE_SMOOTHING for r in WIDE_RAISE for share in WIDE_CLEAR_SHARE
            for n_raise in WIDE_RAISE_WINDOWS for n_clear in WIDE_CLEAR_WINDOWS]


def calibrate_stream_to_target(streams: Sequence[Stream], decision: dict[str, Any], task: str,
                               labels: Sequence[str], target: StreamTarget = StreamTarget(),
                               where: str = "calibration") -> dict[str, Any]:
    """The alert rule of the wide grid that hits the most episodes of ``streams`` while meeting
    ``target`` (ties: the higher active-time precision); when no rule meets it, the one with
    the best :func:`stream_objective`. Meant for many long streams (each a wearer from its
    start): on a few short validation recordings the false-alarm rate is too noisy to
    constrain. Returns ``decision`` with the rule and a note saying which way it was chosen."""
    c = int(decision.get("class_index", positive_class(2)))
    if not has_episodes(streams, c):
        return decision  # nothing to hit: no rule can be told from another
    scored = [(rule, score_streams(streams, rule, task, labels, c)) for rule in wide_rules(decision)]
    within = [(rule, s) for rule, s in scored if target.met_by(s)]
    if within:
        rule, total = max(within, key=lambda rs: (rs[1].hits, rs[1].active_precision))
        how = (f"the most episodes within <= {target.max_false_alarms_per_10min:g} false alarms per 10 min and "
               f"active-time precision >= {target.min_active_precision:g}")
    else:
        rule, total = max(scored, key=lambda rs: stream_objective(rs[1]))
        how = "no rule met the stream target; the best mean of event and active-time F1"
    minutes = sum(len(s.labels) / s.sample_rate_hz for s in streams) / 60.0
    note = (f"; alert rule on {len(streams)} {where} stream(s) ({minutes:.0f} min), {how}: "
            f"{total.hits}/{total.episodes} episodes hit, {total.false_alarms_per_10min:.1f} false alarms per 10 min, "
            f"active-time precision {total.active_precision:.2f} / recall {total.active_recall:.2f}")
    return {**rule, "calibration": str(decision.get("calibration", "")) + note}


def stream_objective(s) -> float:
    """Mean of the event F1 and the active-time F1 of a stream score."""
    raised_ok = s.alerts - s.false_alarms
    precision = raised_ok / s.alerts if s.alerts else 0.0
    recall = s.hit_rate
    event_f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    ap, ar = s.active_precision, s.active_recall
    time_f1 = 2 * ap * ar / (ap + ar) if ap + ar else 0.0
    return 0.5 * (event_f1 + time_f1)
