"""The fault matrix: scripted failures against a real gateway, with recorded outcomes.

    python bench/faults.py [--quick] [--only NAME[,NAME...]] [--list]

Every scenario runs the real ``alanet run`` process (subprocess) with a small real
bundle, a real Mosquitto (restartable, persistence on or off), a pty wearable and a
persistent-session QoS 1 subscriber. For each one it records:

- ``decided``: alerts the gateway raised (its own ``ALERT`` log lines, which it writes
  after the durable commit, or the offline expectation where the stream is clean);
- ``delivered``: unique alert ids the subscriber received;
- ``lost`` = decided − delivered (must be 0);
- ``duplicates``: alerts still duplicated after de-duplication by id, i.e. two ids
  for the same decision (same wearer, type, state and window end) (must be 0);
- ``redelivered``: copies removed by de-duplication (at-least-once delivery, allowed);
- ``recover_s``: time from the fault's end to the system being whole again (the
  meaning is stated per scenario in ``recovery``).

Refusal scenarios (malformed config, tampered bundle) record the exit code, the
one-line message and how long the refusal took. The hostile scenarios (an ACL that
denies the alert topic, a corrupt queue file, a broker that stops acknowledging, a
downgrade and command replay, hostile flash offers) record the alert figures of the
stream that runs through them, plus what the attack was refused with. ``--quick`` shortens the 60 s broker
outage to 5 s (the output says so). Writes ``bench/results/faults.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, Figure, rss_mb, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
import runtime_support as rs  # noqa: E402
from conftest import Mosquitto  # noqa: E402

GW = "gw-fault"
ALERT_RE = re.compile(r"ALERT (\S+) (\S+) (\S+) p=\S+ t=(\S+)-(\S+) s")


@dataclass(frozen=True)
class Outcome:
    """What one fault scenario did to the alerts (see the module docstring)."""

    scenario: str
    fault: str
    ok: bool
    decided: int | None = None
    delivered: int | None = None
    lost: int | None = None
    duplicates: int | None = None
    redelivered: int | None = None
    recover_s: float | None = None
    recovery: str = ""
    details: dict = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    limitation: str = ""  # set when the loss is outside the gateway (documented, not a gateway failure)

    def as_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- harness
class Subscriber:
    """Persistent-session QoS 1 subscriber on ``alanet/<GW>/#``, resubscribing on every connect."""

    def __init__(self, port: int, client_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.msgs: list[tuple[str, dict, float]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"alanet/{GW}/#", qos=1)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.05, 0.25)
        self.port = port
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, c, u, m) -> None:
        try:
            d = json.loads(m.payload)
        except ValueError:
            return
        with self.lock:
            self.msgs.append((m.topic, d, time.monotonic()))

    def of(self, suffix: str) -> list[dict]:
        with self.lock:
            return [p for t, p, _ in self.msgs if t.endswith(suffix)]

    def alerts(self) -> list[dict]:
        return self.of("/alert")

    def unique(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for a in self.alerts():
            out.setdefault(a["id"], a)
        return out

    def online_count(self) -> int:
        return sum(1 for s in self.of("/status") if s.get("state") == "online")

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return pred()

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


class Gateway:
    """``alanet run`` as a subprocess (output collected by a thread, so a kill keeps it)."""

    def __init__(self, port_path: str, bundle: Path, broker_url: str, state_dir: Path,
                 extra: tuple[str, ...] = (), preexec: Callable[[], None] | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([sys.executable, "-m", "alanet", "run", "--port", port_path, "--bundle", str(bundle),
                                   "--broker", broker_url, "--gateway", GW, "--wearer", "w1", "--state-dir",
                                   str(state_dir), *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env=env, preexec_fn=preexec)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def alerts_logged(self) -> list[tuple[str, str, str, float]]:
        out = []
        for line in self.lines:
            m = ALERT_RE.search(line)
            if m:
                out.append((m.group(1), m.group(2), m.group(3), float(m.group(5))))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self._t.join(5)
        return int(self.p.returncode)

    def output(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Fixture:
    """The shared test material: session, bundle and its offline expectation."""

    sess: rs.Session
    bundle: Path
    expected: list

    @classmethod
    def load(cls) -> "Fixture":
        sess, bundle = rs.cached_bundle(3, 120.0)
        return cls(sess, bundle, rs.expected_events(bundle, sess))


def _key(a: dict) -> tuple:
    return (a.get("wearer"), a.get("type"), a.get("state"), round(float(a.get("t_end", 0)), 1))


def _ev_key(e) -> tuple:
    return ("w1", e.type, e.state, round(float(e.t_end), 1))


def tally(sub: Subscriber, decided: int) -> dict:
    """delivered / lost / duplicates-after-dedup / redelivered from what the subscriber holds."""
    alerts = sub.alerts()
    uniq = sub.unique()
    keys = [_key(a) for a in uniq.values()]
    dups = len(keys) - len(set(keys))
    return {"decided": decided, "delivered": len(uniq), "lost": max(decided - len(uniq), 0), "duplicates": dups,
            "redelivered": len(alerts) - len(uniq)}


def _ok(t: dict, problems: list[str]) -> bool:
    if t["lost"]:
        problems.append(f"{t['lost']} alert(s) lost")
    if t["duplicates"]:
        problems.append(f"{t['duplicates']} duplicate decision(s) after de-dup")
    return not problems


class Rig:
    """Broker + subscriber + wearable + gateway for one scenario, in a temp dir."""

    def __init__(self, work: Path, fx: Fixture, persistence: bool = True, sub_id: str = "fault-sub",
                 broker_extra: tuple[str, ...] = ()) -> None:
        self.work = work
        self.fx = fx
        (work / "broker").mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(work / "broker", persistence=persistence, extra=broker_extra).start()
        self.sub = Subscriber(self.broker.port, sub_id)
        self.state = work / "state"
        self.wear = rs.PtyWearable()
        self.gw: Gateway | None = None

    def start_gateway(self, port_path: str | None = None, broker_url: str | None = None,
                      bundle: Path | None = None, config: str | None = None, **kw) -> Gateway:
        """``alanet run``; ``config``: TOML text for what flags cannot say (keys, MQTT settings)."""
        if config is not None:
            cfg = self.work / f"gateway-{time.monotonic_ns()}.toml"
            cfg.write_text(config)
            kw["extra"] = (*kw.get("extra", ()), "--config", str(cfg))
        self.gw = Gateway(port_path or self.wear.path, bundle or self.fx.bundle, broker_url or self.broker.url,
                          self.state, **kw)
        return self.gw

    def wait_queue_file(self, timeout: float = 30) -> Path:
        """The gateway's alert queue file, once the gateway has created it (then a moment to settle)."""
        qpath = self.state / "alerts.sqlite"
        deadline = time.monotonic() + timeout
        while not qpath.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        return qpath

    def wait_online(self, n: int = 1, timeout: float = 30) -> None:
        if not self.sub.wait(lambda: self.sub.online_count() >= n, timeout):
            raise RuntimeError(f"gateway never came online: {self.gw.output()[-1500:] if self.gw else ''}")

    def close(self) -> None:
        if self.gw is not None:
            self.gw.stop()
        self.wear.close()
        self.sub.close()
        self.broker.stop()


def write_frames_or_give_up(wear: rs.PtyWearable, sess: rs.Session, start: int, stop: int,
                            alive: Callable[[], bool], stall_s: float = 3.0) -> int:
    """Write frames [start, stop) without blocking forever when the reader has died; return frames written."""
    os.set_blocking(wear.master, False)
    try:
        for i in range(start, stop):
            view = memoryview(wear.enc.frame(int(round(i * 1000 / rs.FS)), sess.angles[i].tolist(),
                                             sess.emg[i].tolist(), seq=i))
            stalled = None
            while view:
                try:
                    n = os.write(wear.master, view)
                    view = view[n:]
                    stalled = None
                except BlockingIOError:
                    now = time.monotonic()
                    stalled = stalled or now
                    if not alive() or now - stalled > stall_s:
                        return i - start
                    time.sleep(0.005)
        return stop - start
    finally:
        os.set_blocking(wear.master, True)


def n_windows(n_frames: int) -> int:
    return (n_frames - rs.L) // rs.S + 1 if n_frames >= rs.L else 0


# --------------------------------------------------------------------------- scenarios
def broker_down(work: Path, fx: Fixture, down_s: float) -> Outcome:
    """Broker stopped mid-session for ``down_s`` seconds while alerts keep being decided."""
    rig = Rig(work, fx)
    problems: list[str] = []
    try:
        rig.start_gateway()
        rig.wait_online()
        cut = int(45 * rs.FS)
        before = [e for e in fx.expected if e.t_end * rs.FS <= cut]
        rig.wear.hello()
        rig.wear.frames(fx.sess, 0, cut)
        rig.sub.wait(lambda: len(rig.sub.unique()) >= len(before), 30)
        t_down = time.monotonic()
        rig.broker.stop()
        rig.wear.frames(fx.sess, cut, fx.sess.n)  # decided during the outage: queued
        time.sleep(max(0.0, down_s - (time.monotonic() - t_down)))
        rig.broker.start()
        t_up = time.monotonic()
        whole = rig.sub.wait(lambda: len(rig.sub.unique()) >= len(fx.expected), 60)
        recover = time.monotonic() - t_up if whole else None
        time.sleep(0.3)
        rc = rig.gw.stop()
        decided = len(rig.gw.alerts_logged())
        t = tally(rig.sub, decided)
        if decided != len(fx.expected):
            problems.append(f"decided {decided}, offline expectation {len(fx.expected)}")
        if rc != 0:
            problems.append(f"gateway exit code {rc}")
        details = {"down_s": round(time.monotonic() - t_down - (recover or 0), 1), "during_outage":
                   len(fx.expected) - len(before), "exit_code": rc}
    finally:
        rig.close()
    return Outcome("broker_down", f"broker stopped {down_s:g} s mid-session", _ok(t, problems), recover_s=_r(recover),
                   recovery="broker back up → every queued alert received", details=details,
                   problems=tuple(problems), **t)


def broker_restart(work: Path, fx: Fixture, persistence: bool, subscriber_away: bool) -> Outcome:
    """Broker restarted (SIGTERM + start) mid-session, optionally while the subscriber is offline."""
    rig = Rig(work, fx, persistence=persistence, sub_id=f"sub-{int(persistence)}{int(subscriber_away)}")
    problems: list[str] = []
    try:
        rig.start_gateway()
        rig.wait_online()
        rig.wear.hello()
        third = fx.sess.n // 3
        rig.wear.frames(fx.sess, 0, third)
        if subscriber_away:
            rig.sub.c.disconnect()  # clean disconnect keeps the persistent session at the broker
            rig.sub.c.loop_stop()
        rig.wear.frames(fx.sess, third, 2 * third)
        time.sleep(0.5)  # acknowledged by the broker, stored for the absent subscriber
        rig.broker.restart(0.5)
        t_up = time.monotonic()
        rig.wear.frames(fx.sess, 2 * third, fx.sess.n)
        if subscriber_away:
            rig.sub.c.reconnect()
            rig.sub.c.loop_start()
        # without persistence an offline subscriber's messages are gone: no point waiting long for them
        whole = rig.sub.wait(lambda: len(rig.sub.unique()) >= len(fx.expected), 20 if persistence or not subscriber_away
                             else 6)
        recover = time.monotonic() - t_up if whole else None
        time.sleep(0.3)
        rc = rig.gw.stop()
        decided = len(rig.gw.alerts_logged())
        t = tally(rig.sub, decided)
    finally:
        rig.close()
    note = ""
    if not persistence and subscriber_away and t["lost"]:
        note = ("lost at the broker: without persistence Mosquitto forgets the offline subscriber's session and the "
                "messages it had acknowledged; the gateway delivered them (run Mosquitto with persistence true)")
    ok = _ok(t, problems) or bool(note)
    name = f"broker_restart_{'persist' if persistence else 'nopersist'}{'_sub_away' if subscriber_away else ''}"
    fault = (f"broker restarted {'with' if persistence else 'without'} persistence"
             f"{', subscriber offline across the restart' if subscriber_away else ''}")
    return Outcome(name, fault, ok, recover_s=_r(recover), recovery="broker restart → every alert received",
                   details={"exit_code": rc}, problems=tuple(problems) if not note else (), limitation=note, **t)


def gateway_sigkill(work: Path, fx: Fixture) -> Outcome:
    """Broker away, every alert queued, gateway SIGKILLed, broker back, gateway restarted."""
    rig = Rig(work, fx)
    problems: list[str] = []
    try:
        rig.broker.stop()
        rig.start_gateway()
        qpath = rig.wait_queue_file()
        rig.wear.hello()
        rig.wear.frames(fx.sess, 0, fx.sess.n)
        from alanet.device.alert_queue import AlertQueue

        def queued() -> int:
            q = AlertQueue(qpath)
            try:
                return len(q.pending())
            finally:
                q.close()

        deadline = time.monotonic() + 30
        while queued() < len(fx.expected) and time.monotonic() < deadline:
            time.sleep(0.05)
        n_queued = queued()
        rc1 = rig.gw.stop(signal.SIGKILL)
        decided = len(rig.gw.alerts_logged())
        rig.broker.start()
        t_restart = time.monotonic()
        wear2 = rs.PtyWearable()
        rig.start_gateway(wear2.path)
        whole = rig.sub.wait(lambda: len(rig.sub.unique()) >= n_queued, 60)
        recover = time.monotonic() - t_restart if whole else None
        time.sleep(0.3)
        rc2 = rig.gw.stop()
        wear2.close()
        t = tally(rig.sub, decided)
        if rc1 != -9:
            problems.append(f"first gateway exit {rc1}, expected SIGKILL")
        if n_queued != len(fx.expected):
            problems.append(f"{n_queued} queued at the kill, {len(fx.expected)} expected")
        left = queued()
        if left:
            problems.append(f"{left} left in the queue after delivery")
    finally:
        rig.close()
    return Outcome("gateway_sigkill", "gateway SIGKILLed with alerts queued (broker down), then restarted",
                   _ok(t, problems), recover_s=_r(recover), recovery="gateway restart → every queued alert received",
                   details={"queued_at_kill": n_queued, "exit_codes": [rc1, rc2]}, problems=tuple(problems), **t)


def serial_unplug(work: Path, fx: Fixture, quick: bool) -> Outcome:
    """The wearable vanishes for 1 s every 12 s of session (a new pty under the same path)."""
    from alanet.firmware_bridge.simulator import Simulator

    rig = Rig(work, fx)
    problems: list[str] = []
    n = int((60 if quick else 120) * rs.FS)
    bd = np.zeros((n, 33), np.float32)
    bd[:, :13], bd[:, 26:30] = fx.sess.angles[:n], fx.sess.emg[:n]
    sim = Simulator(bd, speed=10.0, faults="disconnect=12,down=1", seed=1)
    try:
        rig.start_gateway(sim.path)
        rig.wait_online()
        sim.start()
        if not sim.join(120) or sim.error is not None:
            problems.append(f"simulator: {sim.error}")
        truth = sim.truth()["faults"]
        lost_frames = set(truth["lost"])
        # windows are the stream's; wait until the last expected window's state arrived
        rig.sub.wait(lambda: any(s.get("seq", 0) >= n - 1 - rs.S - 60 for s in rig.sub.of("/state")), 15)
        time.sleep(0.5)
        rc = rig.gw.stop()
        decided = len(rig.gw.alerts_logged())
        t = tally(rig.sub, decided)
        status = [s for s in rig.sub.of("/status") if s.get("state") == "offline" and "counters" in s]
        c = status[-1]["counters"] if status else {}
        states = sorted(s["t_end"] for s in rig.sub.of("/state"))
        gaps = [b - a for a, b in zip(states, states[1:]) if b - a > rs.S / rs.FS + 1e-6]
        in_flight = n - len(lost_frames) - int(c.get("frames") or 0)  # in the old port's buffer at the unplug
        if in_flight > 30 * max(truth["disconnects"], 1):
            problems.append(f"frames accepted {c.get('frames')}, sent {n - len(lost_frames)}")
        if c.get("serial_reconnects", 0) < truth["disconnects"]:
            problems.append(f"{c.get('serial_reconnects')} serial reconnects for {truth['disconnects']} unplugs")
        # stream time from the end of an outage to the next window: the 3 s refill, plus the outage
        recover = (max(gaps) - 1.0) / sim.speed if gaps else None
    finally:
        sim.close()
        rig.close()
    return Outcome("serial_unplug", "wearable unplugged 1 s every 12 s (simulator, 10× speed)", _ok(t, problems),
                   recover_s=_r(recover), recovery="replug → next window (wall time at 10×; the window must refill "
                   "3 s of stream, 0.3 s at this speed)",
                   details={"unplugs": truth["disconnects"], "frames_lost_unplugged": len(lost_frames),
                            "frames_accepted": c.get("frames"),
                            "frames_lost_in_port_buffer_at_unplug": in_flight, "serial_reconnects": c.get("serial_reconnects"),
                            "window_resets": c.get("resets"), "exit_code": rc}, problems=tuple(problems), **t)


def _stream(rig: Rig, fx: Fixture, damage: Callable[[int, bytes], bytes | None],
            t_of: Callable[[int], int] | None = None) -> None:
    """Write the session's frames through ``damage(i, wire)`` (None = skip the frame)."""
    enc = rig.wear.enc
    rig.wear.hello()
    for i in range(fx.sess.n):
        t_ms = t_of(i) if t_of else int(round(i * 1000 / rs.FS))
        wire = enc.frame(t_ms % (1 << 32), fx.sess.angles[i].tolist(), fx.sess.emg[i].tolist(), seq=i)
        out = damage(i, wire)
        if out:
            rig.wear.write(out)


def _stream_scenario(work: Path, fx: Fixture, name: str, fault: str,
                     damage: Callable[[int, bytes], bytes | None], check: Callable[[dict, list[str]], None],
                     t_of: Callable[[int], int] | None = None, compare_clean: bool = False) -> Outcome:
    rig = Rig(work, fx)
    problems: list[str] = []
    try:
        rig.start_gateway()
        rig.wait_online()
        t0 = time.monotonic()
        _stream(rig, fx, damage, t_of)
        rig.sub.wait(lambda: len(rig.sub.of("/state")) >= 1 and
                     max(s["seq"] for s in rig.sub.of("/state")) >= fx.sess.n - rs.S - 1, 30)
        took = time.monotonic() - t0
        time.sleep(0.5)
        rc = rig.gw.stop()
        logged = rig.gw.alerts_logged()
        t = tally(rig.sub, len(logged))
        status = [s for s in rig.sub.of("/status") if s.get("state") == "offline" and "counters" in s]
        c = status[-1]["counters"] if status else {}
        if rc != 0:
            problems.append(f"gateway exit code {rc}: {rig.gw.output()[-800:]}")
        if "Traceback" in rig.gw.output():
            problems.append("a traceback in the gateway's log")
        check(c, problems)
        details = {"exit_code": rc, "counters": {k: c.get(k) for k in ("frames", "crc_errors", "resyncs", "gaps", "lost",
                                                                        "bridged", "resets", "windows")}}
        if compare_clean:
            clean = sorted(_ev_key(e)[1:3] for e in fx.expected)
            got = sorted(_key(a)[1:3] for a in rig.sub.unique().values())
            details["same_alerts_as_clean_stream"] = got == clean
    finally:
        rig.close()
    return Outcome(name, fault, _ok(t, problems), recover_s=0.0 if not problems else None,
                   recovery="no outage: the stream keeps being classified (the damaged frames are dropped or bridged)",
                   details={**details, "stream_s": round(took, 2)}, problems=tuple(problems), **t)


def corrupted_bytes(work: Path, fx: Fixture) -> Outcome:
    rng = np.random.default_rng(7)

    def damage(i: int, wire: bytes) -> bytes:
        if i % 40 == 17:  # a burst of 1-64 random bytes (may hold 0x00) before the frame
            return rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes() + wire
        if i % 97 == 5:  # one flipped bit inside the frame
            b = bytearray(wire)
            k = int(rng.integers(1, len(b) - 1))
            b[k] ^= 1 << int(rng.integers(0, 8))
            return bytes(b)
        return wire

    def check(c: dict, problems: list[str]) -> None:
        if not c.get("crc_errors") and not c.get("resyncs"):
            problems.append("no CRC errors or resyncs counted")

    return _stream_scenario(work, fx, "corrupted_bytes", "bursts of 1-64 random bytes every 40 frames, a bit flip "
                            "every 97", damage, check, compare_clean=True)


def sequence_gaps(work: Path, fx: Fixture) -> Outcome:
    long_gap = range(3000, 3120)

    def damage(i: int, wire: bytes) -> bytes | None:
        if i in long_gap:
            return None  # 2 s missing: the window restarts
        if i % 300 == 150 or i % 300 == 151:
            return None  # 2 missing frames: bridged
        return wire

    def check(c: dict, problems: list[str]) -> None:
        if not c.get("gaps") or not c.get("resets"):
            problems.append(f"gaps {c.get('gaps')}, resets {c.get('resets')}: expected both > 0")

    return _stream_scenario(work, fx, "sequence_gaps", "2-frame gaps every 300 frames (bridged) and one 120-frame gap "
                            "(window restarts)", damage, check)


def clock_jumps(work: Path, fx: Fixture) -> Outcome:
    n = fx.sess.n

    def t_of(i: int) -> int:
        base = int(round(i * 1000 / rs.FS))
        if i >= 2 * n // 3:
            return base - int(round((2 * n // 3) * 1000 / rs.FS))  # device clock reset to 0
        if i >= n // 3:
            return base + 3_600_000  # clock jumps 1 h forward
        return base

    def check(c: dict, problems: list[str]) -> None:
        if c.get("windows") != n_windows(n):
            problems.append(f"windows {c.get('windows')}, expected {n_windows(n)} (sequence is continuous)")

    return _stream_scenario(work, fx, "clock_jumps", "device clock jumps +1 h, later resets to 0 (sequence continuous)",
                            lambda i, w: w, check, t_of=t_of, compare_clean=True)


def disk_full(work: Path, fx: Fixture) -> Outcome:
    """The alert queue's file system fills up while the broker is away, then the broker returns.

    Order of events: broker down; the queue's disk fills; a session is streamed (its
    alerts cannot be committed); the broker comes back with the disk still full (the
    alerts must arrive); the gateway is stopped and started again on the full disk (it
    must run or refuse with one line, not crash-loop); space comes back.
    """
    problems: list[str] = []
    mnt = work / "small-fs"
    mnt.mkdir()
    mounted = False
    preexec = None
    if os.geteuid() == 0 and shutil.which("mount"):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
        mounted = r.returncode == 0
    method = "tmpfs of 1 MiB filled to its last few KiB" if mounted else "RLIMIT_FSIZE of 48 KiB on the gateway"
    if not mounted:
        def preexec() -> None:  # noqa: F811 - files may not grow past 48 KiB; the write fails with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))
    rig = Rig(work, fx)
    rig.state = mnt / "state"
    qpath = rig.state / "alerts.sqlite"
    details: dict = {"method": method}
    recover = None
    try:
        rig.broker.stop()  # nothing can be delivered: every alert would have to be queued
        g1 = rig.start_gateway(preexec=preexec)
        rig.wait_queue_file()
        if mounted:
            st = os.statvfs(mnt)
            free = st.f_bavail * st.f_frsize
            (mnt / "filler").write_bytes(b"\0" * max(free - 8 * 1024, 0))
        rig.wear.hello()
        details["frames_written"] = write_frames_or_give_up(rig.wear, fx.sess, 0, fx.sess.n,
                                                            lambda: g1.p.poll() is None)
        time.sleep(1.0)
        details["gateway_alive_with_full_disk"] = g1.p.poll() is None
        rig.broker.start()  # the disk is still full
        t_up = time.monotonic()
        decided_1 = len(g1.alerts_logged())
        if rig.sub.wait(lambda: len(rig.sub.unique()) >= decided_1 and decided_1 > 0, 30):
            recover = time.monotonic() - t_up
        time.sleep(0.5)
        rc1 = g1.stop()
        decided = g1.alerts_logged()
        out = g1.output()
        err_lines = [ln for ln in out.splitlines() if re.search(r"full|space|EFBIG|too large|disk", ln, re.I)]
        details.update({"exit_code": rc1, "error_lines": [ln[-240:] for ln in err_lines[-3:]],
                        "traceback": "Traceback" in out})
        # started again on the still-full disk: must run, or refuse with one line (exit 2); never crash
        g2 = rig.start_gateway(preexec=preexec)
        time.sleep(3.0)
        alive2 = g2.p.poll() is None
        rc2 = g2.stop()
        out2 = g2.output()
        details["restart_on_full_disk"] = {"alive_after_3s": alive2, "exit_code": rc2,
                                           "traceback": "Traceback" in out2,
                                           "last_line": (out2.splitlines() or [""])[-1][-240:]}
        if mounted:
            (mnt / "filler").unlink()
        g3 = rig.start_gateway()
        rig.sub.wait(lambda: _queue_len(qpath) == 0, 20)
        time.sleep(0.3)
        g3.stop()
        details["queue_left_after_space_back"] = _queue_len(qpath)
        t = tally(rig.sub, len(decided))
        if not decided:
            problems.append("no alert was decided during the fault")
        if not details["gateway_alive_with_full_disk"]:
            problems.append("the gateway died when the disk filled")
        if not err_lines:
            problems.append("no clear disk-full message in the gateway's log")
        if details["traceback"] or details["restart_on_full_disk"]["traceback"]:
            problems.append("a traceback instead of a one-line error")
        r2 = details["restart_on_full_disk"]
        if not r2["alive_after_3s"] and r2["exit_code"] != 2:
            problems.append(f"restart on the full disk exited {r2['exit_code']} (a crash loop under systemd)")
        if t["lost"]:
            problems.append(f"{t['lost']} decided alert(s) never delivered")
    finally:
        rig.close()
        if mounted:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    return Outcome("disk_full", f"alert queue's disk full ({method}) while the broker is down; broker back first",
                   not problems, recover_s=_r(recover),
                   recovery="broker back (disk still full) → every alert decided meanwhile received", details=details,
                   problems=tuple(problems), **t)


def _queue_len(path: Path) -> int:
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return int(db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return -1


BAD_CONFIGS = {
    "unknown key": ('gateway = "g"\n[mqtt]\nbrokr = "mqtt://127.0.0.1:1"\n', "mqtt.brokr"),
    "bad value": ('gateway = "g"\n[mqtt]\nkeepalive = "soon"\n', "mqtt.keepalive"),
    "not TOML": ('gateway = "g\n[mqtt\n', "TOML"),
    "bad broker URL": ('gateway = "g"\n[mqtt]\nbroker = "http://x"\n', "mqtt.broker"),
    "bad gateway id": ('gateway = "a/b"\n', "gateway"),
    "wrong type table": ('gateway = "g"\nmqtt = 3\n', "mqtt"),
}


def malformed_config(work: Path, fx: Fixture) -> Outcome:
    problems: list[str] = []
    rows = []
    for what, (text, key) in BAD_CONFIGS.items():
        cfg = work / f"bad-{len(rows)}.toml"
        cfg.write_text(f'state_dir = "{work / "st"}"\n' + text)
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "alanet", "run", "--config", str(cfg), "--port", "/dev/null",
                            "--bundle", str(fx.bundle)], capture_output=True, text=True, timeout=60)
        dt = time.monotonic() - t0
        err = r.stderr.strip().splitlines()
        last = err[-1] if err else ""
        good = r.returncode == 2 and key.lower() in last.lower() and "Traceback" not in r.stderr
        if not good:
            problems.append(f"{what}: exit {r.returncode}, message {last[-200:]!r} (expected exit 2 naming {key})")
        rows.append({"case": what, "exit_code": r.returncode, "message": last[-200:], "seconds": round(dt, 2),
                     "ok": good})
    return Outcome("malformed_config", "malformed configuration files", not problems,
                   recover_s=max(r["seconds"] for r in rows), recovery="time to refuse at start (slowest case)",
                   details={"cases": rows}, problems=tuple(problems))


def tampered_bundle(work: Path, fx: Fixture) -> Outcome:
    """Tampered bundles must be refused at start with exit 2 and a one-line reason."""
    from alanet.device.signing import sign_manifest, write_keypair

    problems: list[str] = []
    rows = []
    key = work / "key.pem"
    write_keypair(key)
    signed = work / "signed"
    shutil.copytree(fx.bundle, signed)
    (signed / "signature").write_bytes(sign_manifest((signed / "manifest.json").read_bytes(), key))
    trust_cfg = work / "trust.toml"
    trust_cfg.write_text(f'[model]\ntrusted_keys = ["{key}.pub"]\nallow_unsigned = false\n')

    def copy(name: str, src: Path) -> Path:
        d = work / name
        shutil.copytree(src, d)
        return d

    b1 = copy("flipped", fx.bundle)
    data = bytearray((b1 / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (b1 / "model.tflite").write_bytes(bytes(data))
    b2 = copy("garbage", fx.bundle)
    (b2 / "model.tflite").write_bytes(b"TFL3" + b"\0" * 16)
    b3 = copy("signed-edited", signed)
    m = json.loads((b3 / "manifest.json").read_text())
    m["normalization"]["mean"][0] += 1.0
    (b3 / "manifest.json").write_text(json.dumps(m, indent=1))
    b4 = copy("signed-flipped", signed)
    data = bytearray((b4 / "model.tflite").read_bytes())
    data[-10] ^= 0x80
    (b4 / "model.tflite").write_bytes(bytes(data))
    b5 = copy("unsigned-trusted", fx.bundle)
    cases = [  # (what, bundle, config, words expected in the message)
        ("one flipped byte in model.tflite", b1, None, ("sha", "hash", "model")),
        ("model.tflite replaced by garbage", b2, None, ("sha", "hash", "model")),
        ("signed bundle, normalisation edited in manifest.json", b3, trust_cfg, ("signature",)),
        ("signed bundle, one flipped byte in model.tflite", b4, trust_cfg, ("sha", "hash", "model", "signature")),
        ("unsigned bundle where keys are trusted", b5, trust_cfg, ("signature", "unsigned", "signed")),
    ]
    for what, b, cfg, words in cases:
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "alanet", "run", "--port", "/dev/null", "--bundle", str(b),
               "--broker", "mqtt://127.0.0.1:9", "--state-dir", str(work / f"st-{len(rows)}")]
        if cfg:
            cmd += ["--config", str(cfg)]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            rc, stderr = r.returncode, r.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stderr = None, (exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or "")
            stderr += "\n(still running after 20 s: the bundle was accepted)"
        dt = time.monotonic() - t0
        err = stderr.strip().splitlines()
        last = err[-1] if err else ""
        good = rc == 2 and any(w in last.lower() for w in words) and "Traceback" not in stderr
        if not good:
            problems.append(f"{what}: exit {rc}, message {last[-200:]!r}")
        rows.append({"case": what, "exit_code": rc, "message": last[-240:], "seconds": round(dt, 2), "ok": good})
    # by design, an unsigned manifest is not integrity-protected: record what an edit does
    b6 = copy("unsigned-edited", fx.bundle)
    m = json.loads((b6 / "manifest.json").read_text())
    m["normalization"]["mean"][0] += 1.0
    (b6 / "manifest.json").write_text(json.dumps(m, indent=1))
    r = subprocess.run([sys.executable, "-m", "alanet", "run", "--check", "--port", "/dev/null", "--bundle", str(b6),
                        "--state-dir", str(work / "st-x")], capture_output=True, text=True, timeout=60)
    info = {"case": "unsigned bundle, normalisation edited (no trusted keys)", "exit_code": r.returncode,
            "message": ((r.stderr or r.stdout).strip().splitlines() or [""])[-1][-240:],
            "note": "accepted: only a signature protects the manifest; the self-test input is already normalised, "
                    "so it cannot see a normalisation edit. Ship signed bundles with model.trusted_keys."}
    return Outcome("tampered_bundle", "bundle tampered with", not problems, recover_s=max(r["seconds"] for r in rows),
                   recovery="time to refuse at start (slowest case)", details={"cases": rows, "unsigned_edit": info},
                   problems=tuple(problems))


# --------------------------------------------------------------------------- hostile scenarios
def _status(rig: Rig) -> list[dict]:
    return [d for d in rig.sub.of("/status") if d.get("state") == "online"]


def _stream_session(rig: Rig, fx: Fixture, start: int = 0, stop: int | None = None, pace_hz: float | None = None) -> None:
    rig.wear.frames(fx.sess, start, fx.sess.n if stop is None else stop, pace_hz=pace_hz)


def _gateway_failed(rig: Rig, rc: int, problems: list[str]) -> None:
    if rc != 0:
        problems.append(f"gateway exit code {rc}: {rig.gw.output()[-600:] if rig.gw else ''}")
    if rig.gw is not None and "Traceback" in rig.gw.output():
        problems.append("a traceback in the gateway's log")


ACL_DENY_ALERTS = f"""topic readwrite alanet/{GW}/status
topic readwrite alanet/{GW}/model
topic readwrite alanet/{GW}/+/state
topic readwrite alanet/{GW}/cmd/#
topic readwrite alanet/{GW}/flash/#
topic read alanet/#
"""


def acl_denied(work: Path, fx: Fixture, protocol: str = "5") -> Outcome:
    """The broker's ACL denies the alert topic (a deployment mistake), then the ACL is fixed (SIGHUP)."""
    acl = work / "acl"
    acl.write_text(ACL_DENY_ALERTS)
    rig = Rig(work, fx, broker_extra=(f"acl_file {acl}",))
    problems: list[str] = []
    details: dict = {"protocol": protocol}
    recover = None
    try:
        rig.start_gateway(config=f'[mqtt]\nprotocol = "{protocol}"\nretry_max_s = 2\nheartbeat_s = 0.5\n')
        rig.wait_online()
        _stream_session(rig, fx)
        decided_during = len(fx.expected)
        rig.sub.wait(lambda: len(rig.gw.alerts_logged()) >= decided_during, 30)
        time.sleep(2.0)  # refused (MQTT 5) or silently dropped (3.1.1) meanwhile
        st = _status(rig)
        last = st[-1] if st else {}
        details["delivered_while_denied"] = len(rig.sub.unique())
        details["queue_depth_while_denied"] = last.get("counters", {}).get("queue_depth")
        details["publish_refused"] = last.get("counters", {}).get("publish_refused")
        details["status_problems"] = [p.get("what") for p in last.get("problems", [])]
        acl.write_text(f"topic readwrite alanet/{GW}/#\ntopic read alanet/#\n")
        rig.broker.proc.send_signal(signal.SIGHUP)  # Mosquitto reloads the ACL: the mistake is fixed
        t_fix = time.monotonic()
        if rig.sub.wait(lambda: len(rig.sub.unique()) >= len(fx.expected), 20 if protocol == "5" else 5):
            recover = time.monotonic() - t_fix
        time.sleep(0.3)
        rc = rig.gw.stop()
        decided = len(rig.gw.alerts_logged())
        t = tally(rig.sub, decided)
        _gateway_failed(rig, rc, problems)
        if protocol == "5":
            if details["delivered_while_denied"]:
                problems.append(f"{details['delivered_while_denied']} alert(s) delivered through a denying ACL?")
            if not details["queue_depth_while_denied"] or "publish_refused" not in details["status_problems"]:
                problems.append(f"the refusal was not kept and reported: {details}")
    finally:
        rig.close()
    note = ""
    if protocol != "5" and t["lost"]:
        note = ("MQTT 3.1.1 has no PUBACK reason codes: the broker acknowledged the alerts it denied and the queue "
                "let them go. MQTT 5 (the default) keeps them")
    ok = _ok(t, problems) or bool(note)
    name = "acl_denied" if protocol == "5" else "acl_denied_mqtt311"
    return Outcome(name, f"the broker's ACL denies the alert topic, then is fixed (SIGHUP), MQTT {protocol}", ok,
                   recover_s=_r(recover), recovery="ACL fixed → every alert received (retried with back-off)",
                   details=details, problems=tuple(problems) if not note else (), limitation=note, **t)


def _corrupt_queue(path: Path) -> None:
    """Damage the queue file's first page and its WAL's header: SQLite can read neither."""
    with open(path, "r+b") as f:
        f.write(b"\xde\xad\xbe\xef" * 25)
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        with open(wal, "r+b") as f:
            f.write(b"\x00" * 32)


def corrupt_queue(work: Path, fx: Fixture) -> Outcome:
    """Alerts queued (broker down), the gateway dies, the queue file is found damaged at the next start."""
    rig = Rig(work, fx)
    problems: list[str] = []
    details: dict = {}
    recover = None
    try:
        rig.broker.stop()
        half = fx.sess.n // 2
        first = [e for e in fx.expected if e.t_end * rs.FS <= half]
        rig.start_gateway()
        qpath = rig.wait_queue_file()
        _stream_session(rig, fx, 0, half)
        rig.sub.wait(lambda: len(rig.gw.alerts_logged()) >= len(first), 30)
        time.sleep(0.5)
        rc1 = rig.gw.stop(signal.SIGKILL)
        decided1 = len(rig.gw.alerts_logged())
        _corrupt_queue(qpath)
        rig.broker.start()
        t_start = time.monotonic()
        wear2 = rs.PtyWearable()
        rig.start_gateway(wear2.path, extra=())
        rig.wait_online()
        whole1 = rig.sub.wait(lambda: len(rig.sub.unique()) >= decided1, 30)
        if whole1:
            recover = time.monotonic() - t_start
        st = _status(rig)
        details["status_problems"] = [p for p in (st[-1].get("problems", []) if st else [])]
        wear2.hello()
        wear2.frames(fx.sess, half, fx.sess.n)
        rig.sub.wait(lambda: len(rig.sub.unique()) >= len(fx.expected), 30)
        time.sleep(0.3)
        rc2 = rig.gw.stop()
        wear2.close()
        decided = decided1 + len(rig.gw.alerts_logged())
        t = tally(rig.sub, decided)
        details.update({"decided_before_the_damage": decided1, "exit_codes": [rc1, rc2],
                        "kept_aside": sorted(p.name for p in rig.state.glob("alerts.sqlite.corrupt-*"))})
        if rc2 != 0:
            problems.append(f"restart exit code {rc2}")
        if not any(p.get("what") == "alert_queue_corrupt" for p in details["status_problems"]):
            problems.append("the status topic did not say the queue was corrupt")
        if not details["kept_aside"]:
            problems.append("the corrupt file was not kept")
    finally:
        rig.close()
    return Outcome("corrupt_queue", "alert queue file damaged (first page and WAL header) while alerts were queued",
                   _ok(t, problems), recover_s=_r(recover),
                   recovery="gateway restart → the salvaged alerts received (corrupt file kept aside)",
                   details=details, problems=tuple(problems), **t)


def non_acking_broker(work: Path, fx: Fixture) -> Outcome:
    """A broker that keeps the connection but stops acknowledging (PUBACKs swallowed by a proxy), then recovers."""
    from mqtt_proxy import AckSwallowingProxy

    rig = Rig(work, fx)
    proxy = AckSwallowingProxy(rig.broker.port).start()
    problems: list[str] = []
    details: dict = {}
    recover = None
    try:
        rig.start_gateway(broker_url=proxy.url, config="[mqtt]\nack_timeout_s = 3\nheartbeat_s = 0.5\n")
        rig.wait_online()
        proxy.swallow_acks.set()
        t0 = time.monotonic()
        _stream_session(rig, fx)
        rig.sub.wait(lambda: len(rig.gw.alerts_logged()) >= len(fx.expected), 30)
        time.sleep(max(0.0, 5.0 - (time.monotonic() - t0)))  # at least one ack time-out passes
        peak_inflight = max([d.get("counters", {}).get("inflight", 0) for d in _status(rig)] or [0])
        proxy.swallow_acks.clear()
        t_back = time.monotonic()

        def drained() -> bool:
            st = _status(rig)
            return bool(st) and st[-1].get("counters", {}).get("queue_depth") == 0 and \
                len(rig.sub.unique()) >= len(fx.expected)

        if rig.sub.wait(drained, 30):
            recover = time.monotonic() - t_back
        time.sleep(0.3)
        rc = rig.gw.stop()
        decided = len(rig.gw.alerts_logged())
        t = tally(rig.sub, decided)
        st = _status(rig)
        c = st[-1].get("counters", {}) if st else {}
        details = {"acks_swallowed": proxy.swallowed, "proxy_connections": proxy.connections,
                   "ack_stalls": c.get("ack_stalls"), "peak_inflight": peak_inflight, "exit_code": rc}
        _gateway_failed(rig, rc, problems)
        if not proxy.swallowed:
            problems.append("no acknowledgement was swallowed: the fault did not happen")
        if recover is None:
            problems.append("the queue never drained after the broker acknowledged again")
    finally:
        rig.close()
        proxy.stop()
    return Outcome("non_acking_broker", "the broker stops acknowledging (PUBACKs swallowed) for a session, then "
                   "acknowledges again", _ok(t, problems), recover_s=_r(recover),
                   recovery="acks back → the queue empty (the stalled connection dropped, paho retransmitted)",
                   details=details, problems=tuple(problems), **t)


def _signed_releases(work: Path, fx: Fixture) -> tuple[Path, Path, Path]:
    """(key, release 1, release 2) of the fault bundle, signed; same model, so the same alerts."""
    from alanet.device.bundle import MANIFEST_FILE, MODEL_FILE, write_bundle
    from alanet.device.signing import write_keypair

    key = work / "release.key"
    write_keypair(key)
    m = json.loads((fx.bundle / MANIFEST_FILE).read_text())
    model = (fx.bundle / MODEL_FILE).read_bytes()
    r1 = write_bundle(work / "release-1", dict(m, model_id="fault-r1", bundle_version=1), model, signing_key=key)
    r2 = write_bundle(work / "release-2", dict(m, model_id="fault-r2", bundle_version=2), model, signing_key=key)
    return key, r1, r2


def downgrade_replay(work: Path, fx: Fixture) -> Outcome:
    """A stranger replays a recorded older signed bundle and a recorded signed rollback command."""
    from alanet.device.flash.command import make_command
    from alanet.device.flash.sender import read_archive, send_to_fleet

    key, r1, r2 = _signed_releases(work, fx)
    rig = Rig(work, fx)
    problems: list[str] = []
    details: dict = {}
    recover = None
    try:
        rig.start_gateway(bundle=r1, config=f'[model]\ntrusted_keys = ["{key}.pub"]\nallow_unsigned = false\n')
        rig.wait_online()
        third = fx.sess.n // 3
        _stream_session(rig, fx, 0, third)
        url = rig.broker.url
        # the operator: release 2, a signed rollback (recorded by the stranger), release 2 again
        a, name = read_archive(r2)
        ops = [send_to_fleet(a, [GW], url, name=name, timeout=30, progress=False)[0]]
        recorded = make_command("rollback", GW, "op-rollback", key)
        ops.append(_send_command(url, recorded))
        ops.append(send_to_fleet(a, [GW], url, name=name, timeout=30, progress=False)[0])
        details["operator"] = [getattr(o, "status", o) for o in ops]
        _stream_session(rig, fx, third, 2 * third)
        # the stranger: release 1 again (signed, older), and the recorded rollback command
        a1, n1 = read_archive(r1)
        t_att = time.monotonic()
        replay = send_to_fleet(a1, [GW], url, name=n1, timeout=30, progress=False)[0]
        cmd = _send_command(url, recorded, request="op-rollback")
        fresh_id = make_command("rollback", GW, "stranger-new-id", None)  # unsigned, a new id
        unsigned = _send_command(url, fresh_id, request="stranger-new-id", timeout=3)
        recover = time.monotonic() - t_att
        details["replayed_bundle"] = {"status": replay.status, "reason": replay.reason}
        details["replayed_command"] = (f"answered with the stored result of the recorded command ({cmd}); nothing "
                                       "was done again" if cmd == "active" else cmd)
        details["unsigned_command"] = unsigned
        _stream_session(rig, fx, 2 * third, fx.sess.n)
        rig.sub.wait(lambda: len(rig.sub.unique()) >= len(rig.gw.alerts_logged()) >= len(fx.expected), 30)
        model = [d for d in rig.sub.of("/model")]
        details["model_at_end"] = model[-1].get("model") if model else None
        time.sleep(0.3)
        rc = rig.gw.stop()
        decided = len(rig.gw.alerts_logged())
        t = tally(rig.sub, decided)
        _gateway_failed(rig, rc, problems)
        if details["operator"] != ["took it", "active", "took it"]:
            problems.append(f"the operator's own flash/rollback/flash did not go through: {details['operator']}")
        if replay.status != "refused" or "bundle_version: 1 is below 2" not in (replay.reason or ""):
            problems.append(f"the older release was not refused as a downgrade: {details['replayed_bundle']}")
        if details["model_at_end"] != "fault-r2":
            problems.append(f"the gateway runs {details['model_at_end']} at the end, not fault-r2")
    finally:
        rig.close()
    return Outcome("downgrade_replay", "a stranger replays a recorded older signed bundle and a recorded signed "
                   "rollback command", _ok(t, problems), recover_s=_r(recover),
                   recovery="time until the three replays were refused or ignored (an ignored command gets no "
                   "answer: 3 s of waiting included; no outage: the stream kept being classified)",
                   details=details, problems=tuple(problems), **t)


def _send_command(url: str, payload: bytes, request: str | None = None, timeout: float = 15) -> str:
    """Publish a rollback command; the gateway's answer (its state), or "no answer" (an ignored command)."""
    import paho.mqtt.client as mqtt

    from alanet.device.flash import protocol as P

    req = request or json.loads(json.loads(payload)["body"])["request"]
    got: list[dict] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"cmd-{time.monotonic_ns()}")
    c.on_message = lambda cl, u, m: got.append(json.loads(m.payload))
    port = int(url.rsplit(":", 1)[1])
    c.connect("127.0.0.1", port)
    c.subscribe(P.reply_topic(GW, req), qos=1)
    c.loop_start()
    time.sleep(0.2)
    c.publish(P.rollback_topic(GW), payload, qos=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(d.get("type") == "result" for d in got):
        time.sleep(0.05)
    c.loop_stop()
    c.disconnect()
    res = [d for d in got if d.get("type") == "result"]
    return res[-1]["state"] if res else "no answer"


def hostile_flash_offer(work: Path, fx: Fixture) -> Outcome:
    """While a session streams, a stranger sends offers built to exhaust memory, files and transfer slots."""
    import gzip

    import paho.mqtt.client as mqtt

    from alanet.device.flash import protocol as P
    from alanet.device.flash.sender import read_archive

    key, r1, r2 = _signed_releases(work, fx)
    rig = Rig(work, fx)
    problems: list[str] = []
    details: dict = {}
    try:
        rig.start_gateway(bundle=r1, config=f'[model]\ntrusted_keys = ["{key}.pub"]\nallow_unsigned = false\n')
        rig.wait_online()
        half = fx.sess.n // 2
        _stream_session(rig, fx, 0, half // 2)
        pid = rig.gw.p.pid
        rss0 = rss_mb(pid)
        feeder = threading.Thread(target=_stream_session, args=(rig, fx, half // 2, fx.sess.n),
                                  kwargs={"pace_hz": rs.FS * 10}, daemon=True)
        feeder.start()  # the wearer streams (10x real time) while the stranger works
        replies: list[dict] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="stranger")
        c.on_message = lambda cl, u, m: replies.append(json.loads(m.payload))
        c.connect("127.0.0.1", rig.broker.port)
        c.subscribe(f"alanet/{GW}/flash/#", qos=1)
        c.loop_start()
        time.sleep(0.2)
        pre = f"alanet/{GW}/cmd/flash"
        sent = 0

        def pub(topic: str, payload: bytes) -> None:
            nonlocal sent
            c.publish(topic, payload, qos=1).wait_for_publish(30)
            sent += 1

        tiny = json.dumps({"schema": "alanet.flash/1", "transfer": "tiny", "size": 64 << 20, "sha256": "0" * 64,
                           "chunk_size": 1, "chunks": 64 << 20}).encode()
        pub(f"{pre}/tiny/begin", tiny)
        pub(f"{pre}/tiny/end", tiny)
        signed, _ = read_archive(r2)
        bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
        import io
        import tarfile

        import lzma

        from alanet.device.bundle import XZ_FILTERS

        junk = io.BytesIO()
        with tarfile.open(fileobj=junk, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for k in range(20000):
                tar.addfile(tarfile.TarInfo(f"junk-{k}"), io.BytesIO(b""))

        def xz_tar(members: dict[str, bytes], pax: dict[str, str] | None = None) -> bytes:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, body in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(body)
                    info.pax_headers = pax or {}
                    tar.addfile(info, io.BytesIO(body))
            fast = [{**XZ_FILTERS[0], "preset": 1}]  # same window and decoder memory, quick to build
            return lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, filters=fast)

        xzbomb = xz_tar({"manifest.json": b"{}", "model.tflite": b"\0" * (80 << 20)})  # unpacks past 64 MiB
        paxbomb = xz_tar({"manifest.json": b"{}"}, {"comment": "x" * (40 << 20)})  # a 40 MiB header
        for tid, data in (("gzbundle", gzip.compress(signed)), ("gzbomb", bomb), ("junktar", junk.getvalue()),
                          ("xzbomb", xzbomb), ("paxbomb", paxbomb)):
            offer = P.make_offer(tid, data, 32768, tid)
            pub(f"{pre}/{tid}/begin", offer.to_bytes())
            for i in range(offer.chunks):
                pub(f"{pre}/{tid}/chunk/{i}", data[i * offer.chunk_size:(i + 1) * offer.chunk_size])
            pub(f"{pre}/{tid}/end", offer.to_bytes())
            until = time.monotonic() + 15  # one at a time: each is refused for what it is, not as busy
            while time.monotonic() < until and not any(d.get("transfer") == tid for d in replies
                                                        if d.get("type") == "result"):
                time.sleep(0.05)
        for k in range(50):  # fifty transfers at once, never finished
            o = P.Offer(f"flood{k}", 1 << 20, "0" * 64, 1024, 1024)
            pub(f"{pre}/flood{k}/begin", o.to_bytes())
        for k in range(20):  # chunks past the agent's packet limit, for unknown transfers
            pub(f"{pre}/ghost{k}/chunk/0", b"\xff" * 300_000)
        rss_peak = rss0
        deadline = time.monotonic() + 20
        want = {"tiny", "gzbundle", "gzbomb", "junktar", "xzbomb", "paxbomb"}

        def answered() -> bool:  # the six refused, and the flood: two staged, the rest refused as busy
            done = {d.get("transfer") for d in replies if d.get("type") == "result"}
            return want <= done and sum(1 for t in done if t.startswith("flood")) >= 50 - P.MAX_ACTIVE_TRANSFERS

        while time.monotonic() < deadline and not answered():
            rss_peak = max(rss_peak, rss_mb(pid))
            time.sleep(0.1)
        results = {d["transfer"]: d.get("reason") for d in replies if d.get("type") == "result"}
        c.loop_stop()
        c.disconnect()
        feeder.join(120)
        rig.sub.wait(lambda: len(rig.sub.unique()) >= len(rig.gw.alerts_logged()) >= len(fx.expected), 30)
        rss_peak = max(rss_peak, rss_mb(pid))
        time.sleep(0.3)
        rc = rig.gw.stop()
        decided = len(rig.gw.alerts_logged())
        t = tally(rig.sub, decided)
        model = [d for d in rig.sub.of("/model")]
        details = {"messages": sent, "rss_before_mb": round(rss0, 1), "rss_peak_mb": round(rss_peak, 1),
                   "refusals": {k: (v or "")[:120] for k, v in results.items() if k in want},
                   "flood_refused_busy": sum(1 for k, v in results.items() if k.startswith("flood") and
                                             (v or "").startswith("busy")),
                   "model_at_end": model[-1].get("model") if model else None, "exit_code": rc}
        _gateway_failed(rig, rc, problems)
        if not want <= set(results):
            problems.append(f"not every hostile offer was answered: {sorted(want - set(results))}")
        if rss_peak >= 2 * rss0:
            problems.append(f"RSS grew from {rss0:.0f} to {rss_peak:.0f} MB")
        if details["model_at_end"] != "fault-r1":
            problems.append(f"the model changed to {details['model_at_end']}")
    finally:
        rig.close()
    return Outcome("hostile_flash_offer", "hostile flash offers while a session streams: 1-byte chunks of 64 MiB, a "
                   "gzip bomb, a gzip'd bundle, a tar of 20,000 members, an xz bomb (80 MiB in a few KiB), an xz tar "
                   "with a 40 MiB PAX header, 50 concurrent transfers, oversized chunks",
                   _ok(t, problems), recover_s=0.0 if not problems else None,
                   recovery="no outage: every offer refused, the stream kept being classified, RSS < 2× before",
                   details=details, problems=tuple(problems), **t)


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def scenarios(quick: bool) -> dict[str, Callable[[Path, Fixture], Outcome]]:
    """Name → scenario (each takes a fresh work dir and the fixture)."""
    down = 5.0 if quick else 60.0
    table: dict[str, Callable[[Path, Fixture], Outcome]] = {
        "broker_down": lambda w, f: broker_down(w, f, down),
        "broker_restart_persist_sub_away": lambda w, f: broker_restart(w, f, True, True),
        "broker_restart_nopersist": lambda w, f: broker_restart(w, f, False, False),
        "broker_restart_nopersist_sub_away": lambda w, f: broker_restart(w, f, False, True),
        "gateway_sigkill": gateway_sigkill,
        "serial_unplug": lambda w, f: serial_unplug(w, f, quick),
        "corrupted_bytes": corrupted_bytes,
        "sequence_gaps": sequence_gaps,
        "clock_jumps": clock_jumps,
        "disk_full": disk_full,
        "malformed_config": malformed_config,
        "tampered_bundle": tampered_bundle,
        "acl_denied": acl_denied,
        "acl_denied_mqtt311": lambda w, f: acl_denied(w, f, protocol="3.1.1"),
        "corrupt_queue": corrupt_queue,
        "non_acking_broker": non_acking_broker,
        "downgrade_replay": downgrade_replay,
        "hostile_flash_offer": hostile_flash_offer,
    }
    return table


def run_matrix(names: list[str] | None, quick: bool, log=print) -> list[Outcome]:
    fx = Fixture.load()
    table = scenarios(quick)
    out = []
    for name in names or list(table):
        with tempfile.TemporaryDirectory(prefix=f"alanet-fault-{name}-") as tmp:
            t0 = time.monotonic()
            try:
                o = table[name](Path(tmp), fx)
            except Exception as exc:  # noqa: BLE001 - a broken scenario is an outcome, not the end of the matrix
                o = Outcome(name, name, False, problems=(f"scenario failed: {type(exc).__name__}: {exc}",))
            log(f"{name:36s} {('ok* ' if o.limitation else 'ok  ') if o.ok else 'FAIL'} lost {o.lost} dup {o.duplicates} decided {o.decided} "
                f"recover {o.recover_s} s ({time.monotonic() - t0:.0f} s){'  ' + '; '.join(o.problems) if o.problems else ''}")
            out.append(o)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="broker outage 5 s instead of 60 s; shorter unplug run")
    ap.add_argument("--only", help="comma-separated scenario names")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(scenarios(False)))
        return 0
    names = args.only.split(",") if args.only else None
    unknown = [n for n in names or [] if n not in scenarios(False)]
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(unknown)}")
    if args.quick:
        print("quick mode: the broker outage lasts 5 s instead of 60 s", flush=True)
    t0 = time.monotonic()
    outs = run_matrix(names, args.quick, log=lambda s: print(s, flush=True))
    total_lost = sum(o.lost or 0 for o in outs if not o.limitation)
    broker_lost = sum(o.lost or 0 for o in outs if o.limitation and o.scenario.startswith("broker_"))
    mqtt311_lost = sum(o.lost or 0 for o in outs if o.limitation and o.scenario.endswith("_mqtt311"))
    total_dup = sum(o.duplicates or 0 for o in outs)
    failed = [o.scenario for o in outs if not o.ok]
    figs = [
        Figure("faults.passed", "Fault matrix: scenarios passed", f"{len(outs) - len(failed)}/{len(outs)}", "",
               "scripted faults against the real gateway process, Mosquitto and a pty wearable"
               + (" (quick: 5 s broker outage)" if args.quick else ""), ""),
        Figure("faults.lost", "Fault matrix: alerts lost (all scenarios)", total_lost, "alerts",
               "decided by the gateway − unique ids received by a QoS 1 subscriber", ""),
        Figure("faults.lost_at_nonpersistent_broker", "Alerts lost by a broker without persistence "
               "(subscriber offline across its restart)", broker_lost, "alerts",
               "the broker had acknowledged them, then forgot the offline session: a broker setting, not the gateway",
               ""),
        Figure("faults.lost_acl_denied_mqtt311", "Alerts lost to a denying ACL under MQTT 3.1.1 (option; MQTT 5 "
               "keeps them)", mqtt311_lost, "alerts", "acknowledged by the broker though denied: 3.1.1 has no reason "
               "codes", ""),
        Figure("faults.duplicates", "Fault matrix: duplicates after de-dup", total_dup, "alerts",
               "two ids for one decision (wearer, type, state, window end)", ""),
    ]
    for o in outs:
        if o.recover_s is not None:
            figs.append(Figure(f"faults.{o.scenario}.recover_s", f"Recovery: {o.fault}", o.recover_s, "s",
                               o.recovery, "lower"))
    write_result("faults", {"quick": args.quick, "broker_down_s": 5.0 if args.quick else 60.0,
                            "outcomes": [o.as_dict() for o in outs], "failed": failed,
                            "seconds": round(time.monotonic() - t0, 1)}, figs, args.out)
    print(f"fault matrix: {len(outs) - len(failed)}/{len(outs)} passed; lost {total_lost} (plus {broker_lost} at a "
          f"broker without persistence, {mqtt311_lost} to a denying ACL under MQTT 3.1.1), duplicates {total_dup}"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
