"""The demo bundles' stream check: the shipped protective bundle on a fresh synthetic session,
scored with the stream scorer, next to perfect window classifiers of two labels."""

from __future__ import annotations

from pathlib import Path

from alanet.convert.build_demo_bundles import session_check

BUNDLE = Path(__file__).resolve().parents[1] / "models" / "protective-demo"


def test_session_check_scores_the_bundle_and_two_ceilings():
    r = session_check(BUNDLE, seeds=(102,), duration_s=300.0)  # a session with episodes 0.2-3.6 s apart
    assert r["sessions"] == 1 and r["episodes"] > 0 and 0 <= r["hits"] <= r["episodes"]
    assert r["hits"] + r["misses"] == r["episodes"] and 0.0 <= r["window_macro_f1"] <= 1.0
    for ceiling in ("perfect_windows", "perfect_last_stride"):
        c = r[ceiling]
        assert c["episodes"] == r["episodes"] and 0 < c["hits"] <= c["episodes"]
        assert c["false_alarms_per_10min"] == 0.0  # true labels raise no alert outside an episode
    # labelling each window by its newest stride separates episodes a window's majority merges
    assert r["perfect_last_stride"]["hits"] > r["perfect_windows"]["hits"]
