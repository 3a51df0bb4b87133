"""Decision logic: smoothing, hysteresis, minimum durations, pain horizon."""

import numpy as np
import pytest

from alanet.device.decisions import (CLEARED, PAIN, RAISED, PainDecider, PainRule, ProtectiveDecider,
                                     ProtectiveRule, decide_offline, make_decider, protective_rule)


def feed(d, ps, k=2):
    """Feed positive-class probabilities (K=2) for windows 0..n-1 of 1 s each."""
    out = []
    for i, p in enumerate(ps):
        e = d.update([1 - p, p] if k == 2 else p, float(i), float(i) + 3.0)
        if e:
            out.append(e)
    return out


def test_hysteresis_needs_min_windows_and_clears_below_clear_threshold():
    d = ProtectiveDecider(ProtectiveRule(smoothing_alpha=1.0, raise_threshold=0.6, clear_threshold=0.4,
                                         min_raise_windows=2, min_clear_windows=2))
    # one window above: not enough; then two: raise at the second
    ev = feed(d, [0.1, 0.9, 0.1, 0.7, 0.8, 0.5, 0.45, 0.39, 0.5, 0.3, 0.2, 0.9])
    assert [(e.state, e.window) for e in ev] == [(RAISED, 4), (CLEARED, 10)]
    assert ev[0].t_start == 3.0 and ev[0].t_end == 7.0  # run began at window 3
    assert ev[1].t_start == 3.0 and ev[1].t_end == 13.0  # episode start .. confirming window end
    # values between the thresholds never flip the state
    assert all(e.type == "protective" for e in ev)


def test_values_between_thresholds_hold_the_state():
    d = ProtectiveDecider(ProtectiveRule(smoothing_alpha=1.0, min_raise_windows=1, min_clear_windows=1))
    ev = feed(d, [0.7] + [0.5, 0.45, 0.55] * 10)
    assert [e.state for e in ev] == [RAISED]


def test_smoothing_delays_and_filters_a_spike():
    rule = ProtectiveRule(smoothing_alpha=0.3, min_raise_windows=1, min_clear_windows=1)
    assert feed(ProtectiveDecider(rule), [0.0] * 5 + [1.0] + [0.0] * 5) == []  # single spike filtered
    ev = feed(ProtectiveDecider(rule), [0.0] * 5 + [1.0] * 5)
    # smoothed: 0.3, 0.51, 0.657 -> raise at the third positive window
    assert [(e.state, e.window) for e in ev] == [(RAISED, 7)]
    assert ev[0].probability == pytest.approx(1 - 0.7 ** 3)


def test_custom_class_index_and_task_name():
    d = make_decider("guarding", {"class_index": 2, "smoothing_alpha": 1.0, "raise_threshold": 0.5,
                                  "clear_threshold": 0.5, "min_raise_windows": 1, "min_clear_windows": 1,
                                  "class_name": "guard"}, ["a", "b", "guard"])
    ev = [d.update(p, 0, 3) for p in ([0.1, 0.1, 0.8], [0.8, 0.1, 0.1])]
    assert [(e.type, e.state) for e in ev] == [("guarding", RAISED), ("guarding", CLEARED)]


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="clear_threshold"):
        ProtectiveRule(raise_threshold=0.3, clear_threshold=0.5)
    with pytest.raises(ValueError, match="unknown decision key"):
        protective_rule({"raise_threshold": 0.6, "rise": 1})
    with pytest.raises(ValueError, match="smoothing_alpha"):
        ProtectiveRule(smoothing_alpha=0)


def test_pain_level_changes_after_horizon_and_min_windows():
    d = PainDecider(PainRule(horizon_windows=4, min_change_windows=3), ["none", "low", "high"])
    low, high = [0.1, 0.8, 0.1], [0.05, 0.15, 0.8]
    ev = feed(d, [low] * 5 + [high] * 12 + [high, high, low] * 6, k=3)
    assert [(e.type, e.state, e.level) for e in ev] == [(PAIN, "low", 1), (PAIN, "high", 2)]
    # first level: confirmed at the 3rd window; the 4-window mean leads "high" from the 3rd high window on
    assert ev[0].window == 2
    assert ev[1].window == 5 + 2 + 2  # mean turns at window 7, confirmed 3 windows later
    assert ev[1].t_start == 7.0


def test_pain_alternating_noise_does_not_flap():
    d = PainDecider(PainRule(horizon_windows=8, min_change_windows=4), ["none", "low", "high"])
    rng = np.random.default_rng(0)
    base = np.array([0.2, 0.6, 0.2])
    ps = [np.clip(base + rng.normal(0, 0.15, 3), 0.01, None) for _ in range(200)]
    ev = feed(d, [p / p.sum() for p in ps], k=3)
    assert [e.state for e in ev] == ["low"]


def test_decide_offline_equals_streaming():
    rng = np.random.default_rng(1)
    p = np.clip(np.cumsum(rng.normal(0, 0.1, 300)) % 1.0, 0, 1)
    probs = np.stack([1 - p, p], 1)
    t0 = np.arange(300) * 0.75
    off = decide_offline("protective", None, ["n", "p"], probs, t0, t0 + 3)
    d = make_decider("protective", None, ["n", "p"])
    live = [e for e in (d.update(pr, a, a + 3) for pr, a in zip(probs, t0)) if e]
    assert off == live and len(off) >= 2
    states = [e.state for e in off]
    assert all(a != b for a, b in zip(states, states[1:]))  # strictly alternating raise/clear


def test_warmup_holds_raises_but_not_clears():
    """No run towards a raise starts from a window with less than warmup_s of stream behind
    it (offline: its end time); afterwards raises work as before, and an open episode
    clears even while a new wearer's stream is short."""
    rule = ProtectiveRule(smoothing_alpha=1.0, min_raise_windows=2, min_clear_windows=1, warmup_s=5.0)
    ev = feed(ProtectiveDecider(rule), [0.9] * 6)  # window i ends at i + 3 s
    assert [(e.state, e.window, e.t_start) for e in ev] == [(RAISED, 3, 2.0)]  # the run starts at window 2 (5 s)
    assert feed(ProtectiveDecider(ProtectiveRule(smoothing_alpha=1.0, min_raise_windows=2)), [0.9] * 6)[0].window == 1
    assert decide_offline("protective", {"smoothing_alpha": 1.0, "min_raise_windows": 2, "warmup_s": 5.0}, ["n", "p"],
                          np.array([[0.1, 0.9]] * 6), np.arange(6.0), np.arange(6.0) + 3) == ev
    d = ProtectiveDecider(rule)
    assert d.update([0.1, 0.9], 0, 3, seen_s=60) is None and d.update([0.1, 0.9], 1, 4, seen_s=60).state == RAISED
    assert d.update([0.9, 0.1], 2, 5, seen_s=0.5).state == CLEARED  # clearing is never held
    assert d.update([0.1, 0.9], 3, 6, seen_s=4.9) is None and d.update([0.1, 0.9], 4, 7, seen_s=4.9) is None
    assert d.update([0.1, 0.9], 5, 8, seen_s=5.0) is None and d.update([0.1, 0.9], 6, 9, seen_s=5.1).state == RAISED
    # the pain decider takes the same call and ignores it
    assert PainDecider(PainRule(), ["a", "b", "c"]).update([0.1, 0.8, 0.1], 0, 3, seen_s=0.0) is None


@pytest.mark.parametrize("bad", [-1, "60", float("nan"), True])
def test_bad_warmup_is_one_clear_error(bad):
    with pytest.raises(ValueError, match=r"^decision\.warmup_s must be a number of seconds >= 0, got "):
        protective_rule({"warmup_s": bad})
    assert ProtectiveRule().warmup_s == 0.0 and protective_rule({"warmup_s": 60}).warmup_s == 60.0
