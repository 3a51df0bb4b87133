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


def test_alert_rule_on_calibration_sessions():
    """The protective demo's alert rule is chosen on synthetic sessions no stream check scores:
    played through the bundle as the gateway plays them, to the stream target."""
    import inspect

    from alanet.convert.build_demo_bundles import CALIBRATION_SEEDS, play_sessions
    from alanet.device.scoring import StreamScore, score_windows
    from alanet.train.calibrate import Stream, StreamTarget, calibrate_stream_to_target
    from alanet.train.recalibrate import window_decision

    checked = {*range(101, 106), *range(201, 211), *range(301, 311)}
    assert not checked & set(CALIBRATION_SEEDS)
    assert inspect.signature(session_check).parameters["seeds"].default == (101, 102, 103, 104, 105)
    b, played = play_sessions(BUNDLE, CALIBRATION_SEEDS[:2], 300.0)
    streams = [Stream(p, st, lab, b.window, b.schema.sample_rate_hz) for p, st, lab in played]
    base = window_decision(b.decision)
    assert not {"raise_threshold", "smoothing_alpha"} & set(base)
    dec = calibrate_stream_to_target(streams, base, b.task, b.labels, where="synthetic session")
    assert dec["window_threshold"] == b.decision["window_threshold"]
    s = StreamScore.combine([score_windows(b.task, dec, b.labels, p, st, b.window, b.schema.sample_rate_hz, lab)
                             for p, st, lab in played])
    assert StreamTarget().met_by(s) == ("the most episodes within" in dec["calibration"])
    assert "on 2 synthetic session stream(s) (10 min)" in dec["calibration"]


def test_shipped_protective_rule_was_chosen_on_the_calibration_sessions():
    """The shipped manifest says where its alert rule was chosen: the calibration seeds, to the target."""
    from alanet.convert.build_demo_bundles import CALIBRATION_SEEDS
    from alanet.device.bundle import load_bundle

    note = load_bundle(BUNDLE).decision["calibration"]
    assert f"synthetic session (seeds {CALIBRATION_SEEDS[0]}-{CALIBRATION_SEEDS[-1]})" in note
    assert "the most episodes within <= 2 false alarms per 10 min" in note


def test_from_run_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    """--from-run for the protective demo: a missing run, a run of another task, or --data (unused
    there) stop with one line and exit 2 before anything is converted."""
    import json

    from alanet.convert.build_demo_bundles import main

    pain = tmp_path / "pain-run"
    pain.mkdir()
    (pain / "config.json").write_text(json.dumps({"task": "pain", "model": "alanet"}))
    out = tmp_path / "out"
    for args, says in ((["--from-run", str(tmp_path / "nope")], "config.json: not a readable run config"),
                       (["--from-run", str(pain)], "config.json: task: a protective run is needed, this one is 'pain'"),
                       (["--from-run", str(pain), "--data", str(tmp_path)], "--data: the protective demo's alert rule")):
        assert main(["--which", "protective", "--out", str(out), "--work", str(tmp_path / "w"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("build_demo_bundles: error: ") and says in err[0]
    assert not out.exists()
