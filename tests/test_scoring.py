"""The stream scorer (episodes hit by a raise inside them, false alarms, active time)
and the calibrated window decisions shared by trainer, converter, gateway and demo."""

from __future__ import annotations

import numpy as np
import pytest

from alanet.device.decisions import decide_offline, window_labels
from alanet.device.scoring import (Alert, Span, StreamScore, alerts_from_events, episodes_from_labels, macro_f1,
                                   score_stream, score_windows)

EPISODES = [Span(10.0, 16.0), Span(40.0, 44.0), Span(70.0, 80.0)]


def test_an_episode_is_hit_only_by_a_raise_inside_it():
    alerts = [Alert(12.0, Span(11.0, 17.0)), Alert(45.0, Span(43.0, 46.0)), Alert(60.0, Span(59.0, 61.0))]
    s = score_stream(EPISODES, alerts, 100.0, tolerance_s=1.5)
    assert (s.hits, s.misses, s.false_alarms) == (2, 1, 1)  # 45.0 is within 44 + 1.5; 60.0 is outside everything
    assert s.detection_delays_s == [2.0, 5.0]
    assert s.false_alarms_per_10min == pytest.approx(6.0)
    assert s.active_s == pytest.approx(6.0 + 3.0 + 2.0) and s.truth_s == pytest.approx(20.0)
    assert s.overlap_s == pytest.approx(5.0 + 1.0)
    assert s.active_precision == pytest.approx(6 / 11) and s.active_recall == pytest.approx(0.3)


def test_an_alert_held_for_minutes_hits_at_most_one_episode():
    """The old overlap rule let one long alert "hit" every episode it covered."""
    always = [Alert(9.0, Span(8.0, 100.0))]
    s = score_stream(EPISODES, always, 100.0)
    assert s.hits == 1 and s.misses == 2
    assert s.active_precision == pytest.approx(20.0 / 92.0)


def test_always_protective_scores_badly():
    fs = 10.0
    labels = np.zeros(1000, int)
    for a, b in ((100, 160), (400, 440), (700, 800)):
        labels[a:b] = 1
    eps = episodes_from_labels(labels, fs)
    assert eps == [Span(10.0, 16.0), Span(40.0, 44.0), Span(70.0, 80.0)]
    probs = np.tile([0.0, 1.0], (40, 1))  # every window says protective
    st = np.arange(40) * 2.5
    events = decide_offline("protective", {"raise_threshold": 0.6, "clear_threshold": 0.4}, ["n", "p"], probs,
                            st, st + 3.0)
    s = score_stream(eps, alerts_from_events(events, 1.5, 100.0), 100.0)
    assert s.hits <= 1 and s.active_precision < 0.25


def test_perfect_detector_scores_well_and_sessions_combine():
    alerts = [Alert(e.start + 1.0, Span(e.start, e.end)) for e in EPISODES]
    s = score_stream(EPISODES, alerts, 100.0)
    assert (s.hits, s.false_alarms) == (3, 0)
    assert s.active_precision == pytest.approx(1.0) and s.active_recall == pytest.approx(1.0)
    both = StreamScore.combine([s, score_stream(EPISODES, [], 100.0)])
    assert (both.episodes, both.hits, both.session_s) == (6, 3, 200.0)
    assert both.active_precision == pytest.approx(1.0) and both.active_recall == pytest.approx(0.5)


def test_alerts_from_payloads_use_window_centres():
    payloads = [{"state": "raised", "t_start": 9.0, "t_end": 12.75}, {"state": "cleared", "t_start": 9.0, "t_end": 20.0},
                {"state": "raised", "t_start": 50.0, "t_end": 53.0}]
    a = alerts_from_events(payloads, 1.5, 60.0)
    assert a == [Alert(12.75, Span(10.5, 18.5)), Alert(53.0, Span(51.5, 60.0))]


def test_window_labels_apply_the_calibrated_rule():
    p = np.array([[0.7, 0.3], [0.45, 0.55], [0.9, 0.1]])
    assert window_labels(p, None).tolist() == [0, 1, 0]
    assert window_labels(p, {"class_index": 1, "window_threshold": 0.25}).tolist() == [1, 1, 0]
    three = np.array([[0.5, 0.3, 0.2], [0.4, 0.35, 0.25]])
    assert window_labels(three, {"class_weights": [0.5, 1.0, 1.0]}).tolist() == [1, 1]
    assert macro_f1(np.array([1, 1]), window_labels(three, {"class_weights": [0.5, 1.0, 1.0]})) == 1.0


def _episodes(frames: int, every: int, length: int, L: int, S: int):
    """Toy per-frame labels (an episode of ``length`` frames every ``every`` from frame 200), window
    starts, and each window's protective share."""
    labels = np.zeros(frames, int)
    for a in range(200, frames - 200, every):
        labels[a:a + length] = 1
    starts = np.arange(0, frames - L + 1, S)
    return labels, starts, np.array([labels[s:s + L].mean() for s in starts])


def test_alert_rule_is_chosen_on_validation_streams():
    """calibrate_stream picks smoothing / thresholds / durations that score best with the
    stream scorer on the streams it is given, and says what it measured."""
    from alanet.train.calibrate import Stream, calibrate_stream, stream_objective

    rng = np.random.default_rng(0)
    fs, L, S = 10.0, 30, 5
    labels, starts, frac = _episodes(3000, 400, 80, L, S)
    p1 = np.clip(0.15 + 0.7 * frac + rng.normal(0, 0.2, len(starts)), 0.01, 0.99)  # noisy windows
    stream = Stream(np.stack([1 - p1, p1], axis=1), starts, labels, L, fs)
    base = {"class_index": 1, "window_threshold": 0.5}
    chosen = calibrate_stream([stream], base, "protective", ["n", "p"])
    assert {"smoothing_alpha", "raise_threshold", "clear_threshold", "min_raise_windows"} <= set(chosen)
    assert "validation stream" in chosen["calibration"]

    def score(rule):
        return stream_objective(score_windows("protective", rule, ["n", "p"], stream.proba, starts, L, fs, labels))

    naive = {**base, "smoothing_alpha": 1.0, "raise_threshold": 0.5, "clear_threshold": 0.5, "min_raise_windows": 1,
             "min_clear_windows": 1}
    assert score(chosen) >= score(naive)
    assert score(chosen) > 0.5
    # with a warm-up every candidate is scored with it, and the rule keeps it
    held = calibrate_stream([stream], {**base, "warmup_s": 40.0}, "protective", ["n", "p"])
    assert held["warmup_s"] == 40.0 and "with a 40 s warm-up" in held["calibration"]
    assert score(held) >= score({**chosen, "warmup_s": 40.0})
    events = decide_offline("protective", held, ["n", "p"], stream.proba, starts / fs, (starts + L) / fs)
    assert events and all(e.t_end >= 40.0 for e in events if e.state == "raised")


def test_alert_rule_to_the_stream_target():
    """calibrate_stream_to_target: of the wide grid, the rule with the most hits among those within
    the false-alarm and precision bounds; when none is within them, the best objective, and it says so."""
    from alanet.device.scoring import StreamScore
    from alanet.train.calibrate import Stream, StreamTarget, calibrate_stream_to_target, stream_objective, wide_rules

    rng = np.random.default_rng(1)
    fs, L, S = 10.0, 30, 5
    labels, starts, frac = _episodes(6000, 300, 40, L, S)
    episode = np.cumsum(np.diff(np.concatenate([[0], labels])) == 1)[starts + L - 1]  # the window's newest episode
    strength = np.where(np.arange(episode.max() + 1) % 2 == 0, 0.6, 0.25)  # strong and weak episodes in turn
    p1 = 0.2 + frac * strength[episode] + rng.normal(0, 0.05, len(starts))
    for a in (350, 3000, 5650):  # three long look-alike stretches: a low threshold raises there and stays up
        p1[(starts >= a) & (starts < a + 150) & (frac == 0)] += 0.2
    p1 = np.clip(p1, 0.01, 0.99)
    stream = Stream(np.stack([1 - p1, p1], axis=1), starts, labels, L, fs)
    base = {"class_index": 1, "window_threshold": 0.5}

    def score(rule):
        return StreamScore.combine([score_windows("protective", rule, ["n", "p"], stream.proba, starts, L, fs, labels)])

    rules = wide_rules(base)
    assert len(rules) == 2016 and all(r["window_threshold"] == 0.5 for r in rules)
    every = [score(r) for r in rules]
    chosen = calibrate_stream_to_target([stream], base, "protective", ["n", "p"],
                                        StreamTarget(max_false_alarms_per_10min=2.0, min_active_precision=0.7))
    s = score(chosen)
    assert s.false_alarms_per_10min <= 2.0 and s.active_precision >= 0.7
    assert "the most episodes within" in chosen["calibration"] and chosen["window_threshold"] == 0.5
    within = [w for w in every if w.false_alarms_per_10min <= 2.0 and w.active_precision >= 0.7]
    assert len(within) > 100 and s.hits == max(w.hits for w in within) < s.episodes
    # more hits were there for the taking: within the false-alarm bound at a lower precision, and beyond it
    assert any(w.false_alarms_per_10min <= 2.0 and w.active_precision < 0.7 and w.hits > s.hits for w in every)
    assert any(w.false_alarms_per_10min > 2.0 and w.hits > s.hits for w in every)
    # an unreachable target: the best objective, and the note says no rule met it
    fallback = calibrate_stream_to_target([stream], base, "protective", ["n", "p"],
                                          StreamTarget(max_false_alarms_per_10min=-1.0))
    assert "no rule met the stream target" in fallback["calibration"]
    assert stream_objective(score(fallback)) == max(stream_objective(w) for w in every)
    # nothing to hit: the decision comes back unchanged
    quiet = Stream(stream.proba, starts, np.zeros_like(labels), L, fs)
    assert calibrate_stream_to_target([quiet], base, "protective", ["n", "p"]) == base