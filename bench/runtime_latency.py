"""Gateway runtime benchmark: latency, RSS, start-up time, wearables per core.

1. End to end (a real ``alanet run`` process, Mosquitto, a pty wearable):
   - start-up: process spawn → retained ``online`` status at a subscriber;
   - window latency: the last frame of a window written to the pty → that window's
     ``state`` message received (every window, QoS 0);
   - alert latency: the last frame of the confirming window written → the alert
     received (QoS 1, after the durable queue's commit);
   - RSS of the gateway process (VmHWM, VmRSS at the end).
2. Capacity (in-process, one thread): N wearables' wire bytes through the real
   decoder, pipeline, model and state publishing; CPU seconds per session second →
   how many 60 Hz wearables one core keeps up with; and the runtime's own work per
   window (everything but the model) next to the model's time.

Prints a summary and writes ``bench/results/runtime.json``.

    python bench/runtime_latency.py [--bundle DIR] [--seconds 120] [--speed 4] [--wearers 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import runtime_support as rs  # noqa: E402


def pct(v, q):
    return round(float(np.percentile(np.asarray(v, float), q)), 3) if len(v) else None


def flip_bundle(src: Path, dest: Path) -> Path:
    """A copy of ``src`` whose decision flips on every crossing of 0.5 (many alerts to time)."""
    from alanet.device.bundle import write_bundle

    m = json.loads((src / "manifest.json").read_text())
    if m["task"] != "pain":
        m["decision"] = {**m["decision"], "smoothing_alpha": 1.0, "raise_threshold": 0.5, "clear_threshold": 0.5,
                         "min_raise_windows": 1, "min_clear_windows": 1}
    for k in ("model_file", "model_sha256", "model_bytes"):
        m.pop(k, None)
    return write_bundle(dest, m, (src / "model.tflite").read_bytes(), force=True)


def end_to_end(bundle: Path, sess: rs.Session, seconds: float, speed: float, work: Path) -> dict:
    import paho.mqtt.client as mqtt

    from alanet.device.broker import EmbeddedBroker

    n = min(sess.n, int(seconds * rs.FS))
    written: dict[int, float] = {}
    got_state: dict[int, float] = {}
    got_alert: dict[int, float] = {}
    online = threading.Event()
    with EmbeddedBroker() as broker:
        def on_msg(c, u, m):
            now = time.perf_counter()
            d = json.loads(m.payload)
            if m.topic.endswith("/state"):
                got_state[d["seq"]] = now
            elif m.topic.endswith("/alert"):
                got_alert[d["seq"]] = now
            elif m.topic.endswith("/status") and d.get("state") == "online":
                online.set()

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_message = on_msg
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe("alanet/bench/#", qos=1)
        sub.loop_start()
        wear = rs.PtyWearable()
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "alanet", "run", "--port", wear.path, "--bundle", str(bundle),
                              "--broker", broker.url, "--gateway", "bench", "--state-dir", str(work / "state")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not online.wait(60):
            p.kill()
            raise RuntimeError(f"gateway did not come online: {p.stderr.read()[-2000:] if p.stderr else ''}")
        startup = time.perf_counter() - t0
        wear.wait_opened_by(p.pid)
        wear.hello()
        wear.frames(sess, 0, n, pace_hz=rs.FS * speed, on_written=lambda i: written.__setitem__(i, time.perf_counter()))
        time.sleep(1.5)
        status = Path(f"/proc/{p.pid}/status").read_text()
        mem = {k: int(v.split()[0]) for k, v in (l.split(":", 1) for l in status.splitlines()) if k in ("VmHWM", "VmRSS")}
        p.terminate()
        p.wait(20)
        sub.loop_stop()
        wear.close()
    win_lat = [1000 * (got_state[s] - written[s]) for s in got_state if s in written]
    al_lat = [1000 * (got_alert[s] - written[s]) for s in got_alert if s in written]
    n_windows = (n - rs.L) // rs.S + 1
    return {
        "session_s": n / rs.FS, "speed": speed, "frames": n, "windows_expected": n_windows,
        "windows_received": len(got_state), "alerts_received": len(got_alert),
        "startup_s": round(startup, 3),
        "window_latency_ms": {"p50": pct(win_lat, 50), "p99": pct(win_lat, 99), "max": pct(win_lat, 100), "n": len(win_lat)},
        "alert_latency_ms": {"p50": pct(al_lat, 50), "p99": pct(al_lat, 99), "max": pct(al_lat, 100), "n": len(al_lat)},
        "rss_mb": {"peak": round(mem.get("VmHWM", 0) / 1024, 1), "end": round(mem.get("VmRSS", 0) / 1024, 1)},
    }


def capacity(bundle: Path, sess: rs.Session, wearers: int, seconds: float, work: Path) -> dict:
    """Run N wearables' bytes through one in-process Gateway on this thread; CPU time per session second."""
    from alanet.device.broker import EmbeddedBroker
    from alanet.device.config import WearableConfig, load_config
    from alanet.device.runtime import Gateway, load_model
    from alanet.firmware_bridge.codec import Encoder

    n = min(sess.n, int(seconds * rs.FS))
    enc = Encoder()
    # the bytes of 4 frames per read (~67 ms at 60 Hz), like a serial read loop delivers them
    frames = [enc.frame(int(i * 1000 / rs.FS), sess.angles[i].tolist(), sess.emg[i].tolist(), seq=i) for i in range(n)]
    frames[0] = enc.hello(0) + frames[0]  # a wearable announces itself before its first frame
    chunks = [b"".join(frames[i:i + 4]) for i in range(0, n, 4)]
    with EmbeddedBroker() as broker:
        cfg = load_config(None, {"port": "/dev/null", "bundle": str(bundle), "broker": broker.url, "gateway": "cap",
                                 "state_dir": str(work / "cap-state")})
        cfg = replace(cfg, wearables=tuple(WearableConfig(f"w{i}", f"/dev/null{i}") for i in range(wearers)))
        bundle_obj, spec = load_model(cfg)
        model_cpu = [0.0]
        raw_predict = spec.predict

        def timed_predict(w):  # LiteRT runs on the calling thread (1 thread): its CPU time is the model's
            t = time.thread_time()
            out = raw_predict(w)
            model_cpu[0] += time.thread_time() - t
            return out

        gw = Gateway(cfg, model=(bundle_obj, replace(spec, predict=timed_predict)))
        gw.link.start()
        gw.link.wait_connected(10)
        # model alone, on the same windows
        wins, _ = rs.session_windows(sess, gw.spec.normalizer)
        pred = gw.spec.predict
        for w in wins[:20]:
            pred(w)
        c0 = time.thread_time()
        for w in wins:
            pred(w)
        model_ms = 1000 * (time.thread_time() - c0) / len(wins)
        c0, w0 = time.process_time(), time.perf_counter()
        for ch in chunks:
            for i in range(wearers):
                gw.process(i, ch)
            gw.link.poll()
        cpu = time.process_time() - c0
        wall = time.perf_counter() - w0
        windows = sum(w.pipeline.counters.windows for w in gw.wearables)
        inf_s = model_cpu[0]
        gw.link.stop(gw.status_topic, b"{}")
        gw.queue.close()
        gw._lock.release()
    session_s = n / rs.FS
    cpu_per_wearer_s = cpu / (wearers * session_s)  # CPU seconds per wearable per second of stream
    overhead_ms = 1000 * (cpu - inf_s) / windows  # everything but the model, per window
    return {
        "wearers": wearers, "session_s": session_s, "frames": n * wearers, "windows": windows,
        "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
        "cpu_per_wearable_per_s_ms": round(1000 * cpu_per_wearer_s, 3),
        "wearables_per_core_60hz": int(1.0 / cpu_per_wearer_s),
        "model_ms_per_window": round(model_ms, 4),
        "model_cpu_ms_per_window_in_run": round(1000 * inf_s / windows, 4),
        "runtime_overhead_ms_per_window": round(overhead_ms, 4),
        "frames_per_cpu_s": int(n * wearers / cpu),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle to time (default: models/protective-demo, else a built test bundle)")
    ap.add_argument("--seconds", type=float, default=120.0, help="session seconds streamed end to end")
    ap.add_argument("--speed", type=float, default=4.0, help="pace of the end-to-end stream (x real time)")
    ap.add_argument("--wearers", type=int, default=20, help="simultaneous wearables in the capacity run")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "runtime.json"))
    args = ap.parse_args()
    sess = rs.make_session(seed=3, duration_s=max(args.seconds, 60.0))
    with tempfile.TemporaryDirectory(prefix="alanet-bench-") as tmp:
        work = Path(tmp)
        if args.bundle:
            bundle = Path(args.bundle)
        elif (REPO / "models" / "protective-demo" / "manifest.json").is_file():
            bundle = REPO / "models" / "protective-demo"
        else:
            bundle = rs.build_bundle(work / "built", sess)
        flip = flip_bundle(bundle, work / "flip")
        print(f"bundle: {bundle}", file=sys.stderr)
        e2e = end_to_end(flip, sess, args.seconds, args.speed, work)
        print(f"end to end: {json.dumps(e2e)}", file=sys.stderr)
        cap = capacity(bundle, sess, args.wearers, min(args.seconds, 60.0), work)
        print(f"capacity: {json.dumps(cap)}", file=sys.stderr)
        manifest = json.loads((bundle / "manifest.json").read_text())
    result = {
        "benchmark": "runtime", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "platform": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
                     "processor": platform.processor() or platform.machine()},
        "bundle": {"path": str(bundle) if args.bundle or bundle.is_relative_to(REPO) else "(built test bundle)",
                   "model_id": manifest.get("model_id"), "quantization": manifest.get("quantization")},
        "end_to_end": e2e, "capacity": cap,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    e, c = e2e, cap
    print(f"start-up {e['startup_s']:.2f} s | window latency p50 {e['window_latency_ms']['p50']} ms "
          f"p99 {e['window_latency_ms']['p99']} ms (n={e['window_latency_ms']['n']}) | alert latency p50 "
          f"{e['alert_latency_ms']['p50']} ms p99 {e['alert_latency_ms']['p99']} ms (n={e['alert_latency_ms']['n']}) | "
          f"RSS peak {e['rss_mb']['peak']} MB")
    print(f"capacity: {c['wearables_per_core_60hz']} wearables at 60 Hz per core | per window: model "
          f"{c['model_ms_per_window']} ms, runtime overhead {c['runtime_overhead_ms_per_window']} ms | "
          f"{c['frames_per_cpu_s']} frames per CPU second")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
