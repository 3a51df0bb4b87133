"""Simulator -> real pty -> SerialLink -> Decoder, with and without faults; unplug/replug; CLI."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from alanet.firmware_bridge.codec import Decoder
from alanet.firmware_bridge.csv_mode import CsvDecoder
from alanet.firmware_bridge.port import SerialLink
from alanet.firmware_bridge.protocol import Frame, Hello, hello_problem
from alanet.firmware_bridge.simulator import Simulator, parse_faults, protective_episodes
from alanet.firmware_bridge.virtual_port import VirtualPort

FS = 60.0


@pytest.fixture(scope="module")
def session() -> np.ndarray:
    """A 5-minute 60 Hz session [18000, 33] in EmoPain layout."""
    try:
        from alanet.train.data.synthetic import synth_session

        return synth_session(seed=0, duration_s=300.0, patient=True, pain_level=1)
    except ImportError:  # local stand-in until the generator exists
        rng = np.random.default_rng(0)
        s = np.zeros((18000, 33))
        s[:, :13] = np.cumsum(rng.normal(0, 0.01, (18000, 13)), axis=0)
        s[:, 26:30] = np.abs(rng.normal(0, 1, (18000, 4)))
        s[4000:5200, 32] = 1
        return s


class Receiver:
    """What a gateway does: a SerialLink feeding a decoder, collecting frames."""

    def __init__(self, path: str, csv: bool = False) -> None:
        self.dec = CsvDecoder() if csv else Decoder()
        self.frames: list[Frame] = []
        self.hellos: list[Hello] = []
        self.states: list[str] = []
        self.link = SerialLink(path, on_data=self._on_data, on_state=self.states.append, reconnect_backoff=(0.02, 0.2))

    def _on_data(self, data: bytes) -> None:
        for p in self.dec.feed(data):
            (self.frames if isinstance(p, Frame) else self.hellos).append(p)

    def __enter__(self) -> "Receiver":
        self.link.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()


def play(session, *, faults="", speed=300.0, csv=False, duration=None) -> tuple[Simulator, Receiver]:
    sim = Simulator(session, speed=speed, faults=faults, seed=3, duration=duration, mode="csv" if csv else "binary").open()
    try:
        with Receiver(sim.path, csv=csv) as rx:
            sim.start()
            assert sim.join(120), "simulator did not finish"
            assert sim.error is None, sim.error
            deadline = time.monotonic() + 10
            want = sim.truth()["frames_expected"]
            while len(rx.frames) < want and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
    finally:
        sim.close()
    return sim, rx


def test_every_frame_of_a_5_minute_session_arrives_once(session):
    sim, rx = play(session)
    seqs = [f.seq for f in rx.frames]
    assert sim.n_frames == 18000
    assert seqs == list(range(18000)), "lost, duplicated or reordered frames"
    assert rx.dec.stats.lost == 0 and rx.dec.stats.resyncs == 0
    # Values are the session's, rounded to float32; time stamps follow t = seq / fs.
    f = rx.frames[12345]
    assert np.allclose(f.angles, session[12345, :13], atol=1e-6) and np.allclose(f.emg, session[12345, 26:30], rtol=1e-6)
    assert f.t_ms == round(12345 * 1000 / FS)
    assert rx.hellos and hello_problem(rx.hellos[0]) is None
    assert len(rx.hellos) == 60  # at start + every 5 s of session time


def test_losses_equal_injected_faults(session, tmp_path):
    sim, rx = play(session, faults="noise=0.01,bitflip=0.0005,drop=0.01,disconnect=60,down=1")
    truth = sim.truth()
    lost = set(truth["faults"]["lost"])
    assert truth["faults"]["disconnects"] == 4 and truth["faults"]["dropped"] and truth["faults"]["corrupted"]
    assert truth["faults"]["noise_bursts"] > 0 and truth["faults"]["bitflips"] > 0
    seqs = [f.seq for f in rx.frames]
    assert len(seqs) == len(set(seqs)), "duplicated frames"
    assert set(seqs) == set(range(18000)) - lost
    # The decoder's own loss count sees every lost frame between the first and last received.
    inside = {s for s in lost if seqs[0] < s < seqs[-1]}
    assert rx.dec.stats.lost == len(inside)
    assert rx.link.reconnects == 4
    sim.write_truth(tmp_path / "truth.json")
    assert json.loads((tmp_path / "truth.json").read_text())["faults"]["lost"] == sorted(lost)


def test_csv_mode_delivers_frames(session):
    sim, rx = play(session, csv=True, duration=60.0, speed=200.0)
    assert [f.seq for f in rx.frames] == list(range(3600))
    assert np.allclose(rx.frames[100].angles, session[100, :13], atol=1e-5)
    assert rx.hellos and rx.hellos[0].layout == "emopain-13a4e"


def test_raw_emg_blocks_arrive_and_envelope_back_to_the_session(session):
    from alanet.device.features import EnvelopeFilter
    from alanet.firmware_bridge.protocol import RawEmg

    sim = Simulator(session, speed=100.0, duration=20.0, raw_emg_rate_hz=1000.0, baud=921600, seed=5).open()
    raws: list[RawEmg] = []
    dec = Decoder()

    def on_data(b: bytes) -> None:
        raws.extend(p for p in dec.feed(b) if isinstance(p, RawEmg))

    try:
        with SerialLink(sim.path, on_data=on_data):
            sim.start()
            assert sim.join(60) and sim.error is None
            time.sleep(0.2)
    finally:
        sim.close()
    truth = sim.truth()["raw_emg"]
    assert truth["blocks"] == 400 and truth["block_samples"] == 50 and not truth["lost"]
    assert [r.seq for r in raws] == list(range(400))
    assert raws[1].t_ms == 50 and raws[1].rate_hz == 1000.0
    raw = np.array([s for r in raws for s in r.samples])  # [20000, 4]
    env = EnvelopeFilter(1000.0, cutoff_hz=6.0, channels=4).process(raw)
    want = session[(np.arange(20000) * 60 // 1000), 26:30]
    ratio = env[2000:].mean(axis=0) / want[2000:].mean(axis=0)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio


def test_link_survives_unplug_and_replug_on_a_pty():
    port = VirtualPort()
    got = bytearray()
    states: list[str] = []
    link = SerialLink(port.path, on_data=got.extend, on_state=states.append, reconnect_backoff=(0.02, 0.1)).start()
    try:
        for i in range(3):
            assert link.wait_up(5), f"link not up on round {i}"
            assert port.wait_reader(5)
            port.write(b"round%d;" % i, 1)
            deadline = time.monotonic() + 5
            while b"round%d;" % i not in got and time.monotonic() < deadline:
                time.sleep(0.01)
            assert b"round%d;" % i in got
            port.unplug()  # the device vanishes
            deadline = time.monotonic() + 5
            while link.state != "down" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert link.state == "down"
            time.sleep(0.1)  # still unplugged: the link keeps retrying
            port.replug()
        assert link.wait_up(5)
        assert link.reconnects == 3
        assert states[:3] == ["up", "down", "up"]
    finally:
        link.stop()
        port.close()


def test_unopenable_port_logs_clearly_and_keeps_retrying(tmp_path, caplog):
    missing = tmp_path / "ttyNOPE"
    caplog.set_level(logging.INFO, logger="alanet.firmware_bridge.port")
    link = SerialLink(str(missing), on_data=lambda b: None, reconnect_backoff=(0.01, 0.05)).start()
    try:
        deadline = time.monotonic() + 5
        while link.open_failures < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.open_failures >= 5, "the link stopped retrying"
        assert link.state == "down"
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and f"cannot open serial port '{missing}'" in errors[0].getMessage()
        assert len(errors) < link.open_failures  # logged once per distinct error, not per attempt
        # The port appears later: the same link picks it up.
        port = VirtualPort(missing)
        try:
            assert link.wait_up(5)
        finally:
            link.stop()
            port.close()
    finally:
        link.stop()


def test_fault_spec_parsing_and_episodes():
    f = parse_faults("noise=0.01, bitflip=0.001,drop=0.01,disconnect=30")
    assert (f.noise, f.bitflip, f.drop, f.disconnect, f.down) == (0.01, 0.001, 0.01, 30.0, 1.0)
    for bad in ("noise", "drop=2", "speed=3", "bitflip=x"):
        with pytest.raises(ValueError, match="faults"):
            parse_faults(bad)
    labels = np.array([0, 1, 1, 0, 0, 1, 1, 1])
    assert protective_episodes(labels, 2.0) == [{"t_start": 0.5, "t_end": 1.5}, {"t_start": 2.5, "t_end": 4.0}]


def test_cli_simulate_prints_path_streams_and_writes_truth(session, tmp_path):
    np.save(tmp_path / "s.npy", session[:1200])
    truth = tmp_path / "truth.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alanet", "simulate", "--session", str(tmp_path / "s.npy"), "--duration", "10",
         "--speed", "20", "--faults", "drop=0.05", "--truth", str(truth)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        path = proc.stdout.readline().strip()
        assert path, proc.stderr.read()
        with Receiver(path) as rx:
            proc.wait(60)
            time.sleep(0.1)
        assert proc.returncode == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    t = json.loads(truth.read_text())
    assert t["frames"] == 600 and t["faults"]["dropped"]
    assert [f.seq for f in rx.frames] == sorted(set(range(600)) - set(t["faults"]["lost"]))
    assert t["protective_episodes"] == protective_episodes(session[:600, 32], FS)


def test_cli_simulate_ctrl_c_is_clean(session, tmp_path):
    np.save(tmp_path / "s.npy", session[:3600])
    truth = tmp_path / "truth.json"
    # A child inherits an ignored SIGINT (a suite started in the background of a non-interactive
    # shell has it so) and Python then never turns it into KeyboardInterrupt: hand it a handled one.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alanet", "simulate", "--session", str(tmp_path / "s.npy"), "--truth", str(truth)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        path = proc.stdout.readline().strip()
        with Receiver(path) as rx:
            deadline = time.monotonic() + 20
            while len(rx.frames) < 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(20) == 130
        assert "interrupted" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert 10 <= len(rx.frames) < 3600
    assert json.loads(truth.read_text())["frames"] == 3600
    assert not os.path.exists(path), "the pty link was left behind"


def test_cli_simulate_bad_input_is_one_clear_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "alanet", "simulate", "--faults", "drop=7"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "alanet simulate: error: faults: 'drop=7'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "alanet", "simulate", "--session", str(tmp_path / "nope.mat")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "nope.mat" in out.stderr


def test_thread_safety_smoke():
    """stop() from another thread while reading returns promptly."""
    port = VirtualPort()
    link = SerialLink(port.path, on_data=lambda b: None).start()
    try:
        assert link.wait_up(5)
        t = threading.Thread(target=link.stop)
        t.start()
        t.join(5)
        assert not t.is_alive() and link.state == "down"
    finally:
        port.close()


def test_cli_serial_monitor_reports_hello_and_frames(session):
    sim = Simulator(session, speed=20.0, duration=3.0, wait_for_reader=True).open()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alanet", "serial-monitor", sim.path, "--seconds", "3", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        sim.start()
        out, err = proc.communicate(timeout=60)
    finally:
        sim.close()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["type"] == "HELLO" and "accepted" in err
    assert [x["seq"] for x in lines if x["type"] == "DATA"] == list(range(180))
    assert json.loads(err.strip().splitlines()[-1])["stats"]["frames"] == 180


def test_simulator_stops_promptly_while_waiting_for_a_reader(session):
    sim = Simulator(session, duration=10.0).start()
    time.sleep(0.3)
    t = time.monotonic()
    sim.close()
    assert sim.done.is_set() and time.monotonic() - t < 2.0
    assert sim.frames_sent == 0 and sim.error is None
