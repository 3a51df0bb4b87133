"""Session bookkeeping without a broker: commands, exercise precedence, a log cut by a power loss,
resume after a restart, exports, and the pain-task report."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace as NS

import numpy as np
import pytest

from alanet.device.report import read_log, render_html, summarise
from alanet.device.sessions import SessionManager, parse_command
from alanet.firmware_bridge.codec import Decoder, Encoder, encode_exercise
from alanet.firmware_bridge.protocol import EXERCISE_NONE, EXERCISES, Exercise

SPEC = NS(model_id="m1", task="protective", labels=("normal", "protective"), stride=45, sample_rate_hz=60.0,
          length=180, decision={"raise_threshold": 0.6, "clear_threshold": 0.4})


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def window(i: int, p: float, state: str | None = "none") -> NS:
    return NS(t_end=3 + 0.75 * i, seq=179 + 45 * i, window=i, probs=np.array([1 - p, p]), smoothed=p, state=state,
              attention=None)


@pytest.mark.parametrize("kind,payload,why", [
    ("session", b"{", "not JSON"),
    ("session", b'{"wearer": "w9", "action": "start"}', "wearer"),
    ("session", b'{"wearer": "w1", "action": "pause"}', "action"),
    ("session", b'{"wearer": "w1", "action": "export"}', "session: missing"),
    ("exercise", b'{"wearer": "w1"}', "exercise: missing"),
    ("exercise", b'{"wearer": "w1", "exercise": "jumping"}', "'jumping' is not an exercise"),
    ("exercise", b'{"wearer": "w1", "exercise": "bend", "source": "root"}', "source"),
])
def test_bad_commands_are_refused_with_the_field_named(kind, payload, why):
    with pytest.raises(ValueError, match=why):
        parse_command(kind, payload, ["w1"])


def test_commands_parse():
    c = parse_command("session", b'{"wearer": "w1", "action": "start", "exercise": "bend", "source": "page"}', ["w1"])
    assert (c.kind, c.action, c.exercise, c.source) == ("session", "start", "bend", "page")
    assert parse_command("exercise", b'{"wearer": "w1", "exercise": null}', ["w1"]).exercise is None


def test_wearable_exercise_acts_on_a_change_only(tmp_path):
    m = SessionManager(tmp_path, "gw", ["w1"], clock=Clock())
    assert m.device_exercise("w1", 3, "bend") and m.context("w1")["exercise"] == "bend"
    assert m.set_exercise("w1", "walking", "page")
    assert not m.device_exercise("w1", 3, "bend")  # the wearable repeats itself: the therapist's choice stays
    assert m.context("w1")["exercise"] == "walking"
    assert m.device_exercise("w1", EXERCISE_NONE, None) and m.context("w1")["exercise"] is None


def test_a_line_cut_by_a_power_loss_is_skipped_and_the_session_resumes(tmp_path):
    clock = Clock()
    m = SessionManager(tmp_path, "gw", ["w1"], clock=clock)
    sid = m.start("w1", SPEC, "page", exercise="bend")
    for i in range(4):
        clock.t += 0.75
        m.on_window("w1", window(i, 0.2), "m1")
    m.wearers["w1"].log._f.write(b'{"k":"w","t":17000')  # the process dies mid-line
    m.wearers["w1"].log._f.flush()
    m2 = SessionManager(tmp_path, "gw", ["w1"], clock=clock)  # the gateway restarts
    assert m2.active("w1") == sid and m2.context("w1")["exercise"] == "bend"
    for i in range(4, 6):
        clock.t += 0.75
        m2.on_window("w1", window(i, 0.9, "active"), "m1")
    s = m2.stop("w1", "mqtt")
    data = read_log(tmp_path / "w1" / f"{sid}.jsonl")
    assert data.bad_lines == 1 and len(data.windows) == 6 and len(data.resumes) == 1
    assert s["windows"] == 6 and s["protective_s"] == 1.5 and s["quality"]["unreadable_lines"] == 1
    assert s["quality"]["gateway_restarts"] == 1
    assert json.loads((tmp_path / "w1" / "history.json").read_text())[-1]["session"] == sid
    raw = gzip.decompress(m2.export("w1", sid))
    assert raw == (tmp_path / "w1" / f"{sid}.jsonl").read_bytes()
    assert m2.export("w1", "../../etc/passwd") is None and m2.export("w1", "nope") is None
    assert m2.state_payload("w1")["state"] == "idle" and m2.state_payload("w1")["last"]["session"] == sid


def test_pain_sessions_report_the_level_distribution(tmp_path):
    clock = Clock()
    spec = NS(**{**SPEC.__dict__, "task": "pain", "labels": ("healthy", "low", "high"), "decision": {}})
    m = SessionManager(tmp_path, "gw", ["w1"], clock=clock)
    sid = m.start("w1", spec, "page")
    levels = [None, None, "healthy", "low", "low", "high", "low", "healthy"]
    for i, lev in enumerate(levels):
        clock.t += 0.75
        m.on_window("w1", NS(t_end=3 + i, seq=i, window=i, probs=np.array([0.5, 0.3, 0.2]), smoothed=0.5, state=lev,
                             attention=None), "m1")
    m.stop("w1", "page")
    data = read_log(tmp_path / "w1" / f"{sid}.jsonl")
    s = summarise(data)
    assert s["pain"] == {"healthy": 2, "low": 3, "high": 1, "unconfirmed": 2}
    assert s["pain_mean_level"] == pytest.approx((0 + 1 + 1 + 2 + 1 + 0) / 6, abs=1e-3)
    assert "protective_s" not in s and "Pain-level estimate" in render_html(data, s)


def test_raw_frames_are_logged_only_when_the_operator_turns_them_on(tmp_path):
    for raw in (False, True):
        m = SessionManager(tmp_path / str(raw), "gw", ["w1"], raw_frames=raw, clock=Clock())
        sid = m.start("w1", SPEC, "page")
        m.on_frame("w1", 7, 116, [0.1] * 13, [2.0] * 4)
        m.stop("w1", "page")
        path = tmp_path / str(raw) / "w1" / f"{sid}.raw.csv"
        assert path.is_file() == raw
        if raw:
            assert path.read_text().splitlines()[1].split(",")[1:4] == ["7", "116", "0.1"]


def test_exercise_packets_decode_and_bad_codes_are_malformed():
    enc = Encoder()
    wire = enc.exercise(5, EXERCISES.index("walking")) + enc.exercise(6, EXERCISE_NONE)
    dec = Decoder()
    out = dec.feed(wire)
    assert out == [Exercise(0, 5, 8), Exercise(1, 6, EXERCISE_NONE)] and [p.name for p in out] == ["walking", None]
    from alanet.firmware_bridge.codec import _seal  # noqa: PLC2701 - craft a CRC-valid packet with a bad code
    assert dec.feed(_seal(0x04, 0, 0, bytes([9]))) == [] and dec.stats.malformed == 1
    assert dec.feed(_seal(0x04, 0, 0, bytes([3, 0]))) == [] and dec.stats.malformed == 2
    with pytest.raises(ValueError):
        encode_exercise(0, 0, 9)
