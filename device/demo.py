"""``alanet demo``: the whole chain on one machine, no hardware, one command.

embedded MQTT broker ← gateway runtime (shipped protective bundle, LiteRT) ← firmware
simulator on a pty (a synthetic rehab session with protective episodes), plus a
subscriber that prints alerts as they arrive. At the end the alerts are scored
against the simulator's ground truth with the toolkit's stream scorer
(:mod:`alanet.device.scoring`): an episode is *hit* only by an alert raised inside it
(± the stated tolerance), every raise outside any episode is a *false alarm*, and the
alert state's active time is compared with the ground truth (precision and recall);
the *detection delay* is the time from the episode's start to the raise decision,
the *delivery* latency the wall-clock time from the gateway's decision to the
subscriber.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.resources
import json
import logging
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from alanet.device.scoring import DEFAULT_TOLERANCE_S, Span, StreamScore, alerts_from_events, score_stream
from alanet.errors import InputError

log = logging.getLogger(__name__)

DEMO_BUNDLE = "protective-demo"
GATEWAY = "demo"
WEARER = "patient-01"


def find_demo_bundle(name: str = DEMO_BUNDLE) -> Path:
    """The shipped bundle: installed package data (``alanet.models``) or the repo's models/."""
    candidates: list[Path] = []
    try:
        root = importlib.resources.files("alanet.models") / name
        candidates.append(Path(str(root)))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(Path(__file__).resolve().parents[1] / "models" / name)
    for c in candidates:
        if (c / "manifest.json").is_file():
            return c
    raise InputError(f"no shipped bundle {name!r} found (looked in {', '.join(map(str, candidates))}); "
                     "pass --bundle DIR")


@dataclass
class DemoSummary:
    session_s: float
    speed: float
    wall_s: float
    broker: str
    model: str
    frames: int
    windows: int
    episodes: int
    alerts: int
    hits: int
    misses: int
    false_alarms: int
    false_alarms_per_10min: float = 0.0
    active_precision: float = 0.0
    active_recall: float = 0.0
    tolerance_s: float = DEFAULT_TOLERANCE_S
    detection_delay_s: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    duplicates: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_alerts(alerts: list[dict], episodes: list[dict], session_s: float, half_window_s: float,
                 tolerance_s: float = DEFAULT_TOLERANCE_S) -> StreamScore:
    """Score received alert payloads against the simulator's ground-truth episodes."""
    spans = [Span(float(e["t_start"]), float(e["t_end"])) for e in episodes]
    return score_stream(spans, alerts_from_events(alerts, half_window_s, session_s), session_s, tolerance_s)


class _Progress:
    def __init__(self, total_s: float, stream: TextIO) -> None:
        self.total = total_s
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.t = 0.0
        self.p = 0.0
        self.state = "none"
        self.lock = threading.Lock()

    def update(self, t: float, p: float, state: str | None) -> None:
        with self.lock:
            self.t, self.p, self.state = t, p, state or "none"
            now = time.monotonic()
            if now - self.last >= (0.25 if self.tty else 10.0):
                self.last = now
                self._draw()

    def _draw(self) -> None:
        n = int(30 * min(1.0, self.t / self.total)) if self.total else 0
        line = (f"session {self.t:6.1f}/{self.total:.0f} s [{'=' * n}{' ' * (30 - n)}]  "
                f"p(protective) {self.p:.2f} {'ACTIVE' if self.state == 'active' else '      '}")
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def line(self, text: str, out: TextIO) -> None:
        with self.lock:
            if self.tty:
                self.stream.write("\r" + " " * 80 + "\r")
                self.stream.flush()
            print(text, file=out, flush=True)
            if self.tty:
                self._draw()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_demo(duration: float = 480.0, speed: float = 6.0, bundle: str | None = None, seed: int = 7,
             broker_url: str | None = None, keep: str | None = None, out: TextIO = sys.stdout,
             err: TextIO = sys.stderr) -> DemoSummary:
    """Run the demo (blocking) and return its summary; prints progress and alerts."""
    from alanet.device.alerts import AlertWatcher, format_alert
    from alanet.device.broker import EmbeddedBroker
    from alanet.device.config import load_config
    from alanet.device.runtime import Gateway
    from alanet.firmware_bridge.simulator import Simulator

    if not duration > 0 or not speed > 0:
        raise InputError("--duration and --speed must be > 0")
    bundle_path = Path(bundle) if bundle else find_demo_bundle()
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="alanet-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    t_wall0 = time.monotonic()
    broker = None
    sim = gw = watcher = None
    gw_thread = None
    try:
        if broker_url is None:
            broker = EmbeddedBroker().start()
            broker_url, broker_kind = broker.url, broker.kind or "?"
        else:
            broker_kind = "external"
        print(f"broker: {broker_kind} at {broker_url}", file=err)
        print(f"simulator: synthetic rehab session, {duration:.0f} s at x{speed:g} (seed {seed})", file=err)
        sim = Simulator(None, duration=duration, speed=speed, seed=seed, send_exercise=True)
        truth = sim.truth()
        (work / "truth.json").write_text(json.dumps(truth, indent=1))
        episodes = truth["protective_episodes"]
        print(f"           {len(episodes)} protective episode(s) in the ground truth; wearable on {sim.path}", file=err)

        cfg = load_config(None, {"port": sim.path, "bundle": str(bundle_path), "broker": broker_url,
                                 "gateway": GATEWAY, "wearer": WEARER, "state_dir": str(work / "state")})
        from dataclasses import replace

        cfg = replace(cfg, heartbeat_s=2.0)
        gw = Gateway(cfg)
        print(f"gateway: model {gw.spec.model_id} ({gw.spec.task}, window {gw.spec.length}, stride {gw.spec.stride}) "
              f"from {bundle_path}", file=err)

        progress = _Progress(duration, err)
        alerts: list[dict] = []
        delivery: list[float] = []
        alerts_log = open(work / "alerts.jsonl", "w")

        def on_alert(a: dict) -> None:
            try:
                sent = _dt.datetime.fromisoformat(a["time"].replace("Z", "+00:00"))
                delivery.append((_dt.datetime.now(_dt.timezone.utc) - sent).total_seconds() * 1000.0)
            except (KeyError, ValueError):
                pass
            alerts.append(a)
            alerts_log.write(json.dumps(a) + "\n")
            alerts_log.flush()
            progress.line(format_alert(a), out)

        def on_state(s: dict) -> None:
            progress.update(float(s.get("t_end", 0.0)), float(s.get("smoothed", 0.0)), s.get("state"))

        watcher = AlertWatcher(broker_url, GATEWAY, on_alert=on_alert, on_state=on_state,
                               client_id="alanet-demo-watch").start()
        if not watcher.connected.wait(10):
            raise InputError(f"demo: the subscriber could not connect to {broker_url}")
        gw_errors: list[BaseException] = []

        def run_gateway() -> None:
            try:
                gw.run(install_signals=False)
            except BaseException as exc:  # reported below
                gw_errors.append(exc)

        gw_thread = threading.Thread(target=run_gateway, name="gateway", daemon=True)
        gw_thread.start()
        sim.start()
        while not sim.join(0.5):
            if gw_errors:
                raise gw_errors[0]
            if time.monotonic() - t_wall0 > duration / speed + 180:
                raise RuntimeError("the simulator did not finish in time")
        if sim.error is not None:
            raise RuntimeError(f"simulator failed: {sim.error}")
        # let the gateway finish the frames already on the wire
        n_frames = truth["frames"]
        expect_windows = max(0, (n_frames - gw.spec.length) // gw.spec.stride + 1)
        deadline = time.monotonic() + 10
        # every window, and every frame (those after the last window wait up to read_hold_ms in the held reads)
        while time.monotonic() < deadline and (sum(w.pipeline.counters.windows for w in gw.wearables) < expect_windows
                                               or sum(w.pipeline.counters.frames for w in gw.wearables) < n_frames):
            time.sleep(0.05)
        time.sleep(0.3)
        counters = gw.counters()
        gw.stop()
        gw_thread.join(15)
        if gw_errors:
            raise gw_errors[0]
        time.sleep(0.2)
        progress.end()
        alerts_log.close()
        session_s = n_frames / truth["sample_rate_hz"]
        sc = score_alerts(alerts, episodes, session_s, gw.spec.length / truth["sample_rate_hz"] / 2)
        summary = DemoSummary(session_s=session_s, speed=speed,
                              wall_s=round(time.monotonic() - t_wall0, 1), broker=broker_kind, model=gw.spec.model_id,
                              frames=int(counters["frames"]), windows=int(counters["windows"]), episodes=len(episodes),
                              alerts=len(alerts), hits=sc.hits, misses=sc.misses, false_alarms=sc.false_alarms,
                              false_alarms_per_10min=round(sc.false_alarms_per_10min, 2),
                              active_precision=round(sc.active_precision, 3), active_recall=round(sc.active_recall, 3),
                              tolerance_s=sc.tolerance_s, detection_delay_s=sc.detection_delays_s,
                              delivery_ms=[round(d, 2) for d in delivery], duplicates=watcher.duplicates)
        (work / "summary.json").write_text(json.dumps(summary.as_dict(), indent=1))
        return summary
    finally:
        if watcher is not None:
            watcher.close()
        if gw is not None and gw_thread is not None and gw_thread.is_alive():
            gw.stop()
            gw_thread.join(15)
        if sim is not None:
            sim.close()
        if broker is not None:
            broker.stop()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def print_summary(s: DemoSummary, out: TextIO = sys.stdout) -> None:
    def med(v: list[float]) -> str:
        return f"{statistics.median(v):.1f}" if v else "-"

    print("", file=out)
    print(f"summary: {s.session_s:.0f} s session at x{s.speed:g} in {s.wall_s:.0f} s; {s.frames} frames, "
          f"{s.windows} windows, model {s.model}, broker {s.broker}", file=out)
    pct = 100.0 * s.hits / s.episodes if s.episodes else 0.0
    print(f"protective episodes in the ground truth: {s.episodes}", file=out)
    print(f"alerts received: {s.alerts} ({s.duplicates} duplicate(s) dropped)", file=out)
    print(f"hits: {s.hits} of {s.episodes} episodes ({pct:.0f} %; raised inside the episode ± {s.tolerance_s:g} s)",
          file=out)
    print(f"misses: {s.misses}", file=out)
    print(f"false alarms: {s.false_alarms} ({s.false_alarms_per_10min:.1f} per 10 min; raised outside every episode)",
          file=out)
    print(f"active-time precision: {s.active_precision:.2f} (recall {s.active_recall:.2f}; alert active vs "
          "ground-truth protective time)", file=out)
    if s.detection_delay_s:
        print(f"detection delay: median {med(s.detection_delay_s)} s (episode start -> raise decision; "
              f"min {min(s.detection_delay_s):.1f}, max {max(s.detection_delay_s):.1f})", file=out)
    if s.delivery_ms:
        d = sorted(s.delivery_ms)
        print(f"delivery latency: median {statistics.median(d):.1f} ms, max {d[-1]:.1f} ms "
              "(gateway decision -> subscriber)", file=out)


def cmd_demo(args: argparse.Namespace) -> int:
    """``alanet demo``."""
    if not getattr(args, "verbose", 0):
        for name in ("alanet.gateway", "alanet.device", "alanet.firmware_bridge"):
            logging.getLogger(name).setLevel(logging.ERROR)
    s = run_demo(duration=args.duration, speed=args.speed, bundle=args.bundle, seed=args.seed,
                 broker_url=args.broker, keep=args.keep)
    print_summary(s)
    if s.frames == 0 or s.windows == 0:
        print("demo: the gateway received no frames", file=sys.stderr)
        return 1
    return 0
