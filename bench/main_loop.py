"""The gateway's real main loop at a ward's load: CPU per window of ``Gateway.run`` itself.

    python bench/main_loop.py [--wearers 1,16,100] [--seconds 20] [--bundle DIR] [--out FILE]

``bench/capacity.py`` replays reads on a simulated clock and measures the work it hands
the gateway; it does not run ``Gateway.run``, so the loop's own turns (waking for serial
data, waiting, polling MQTT between reads) are not in its figures. This bench runs the
real thing on one pinned CPU, in real time: N pty wearables, each written a 60 Hz frame
stream (its own phase and part of a session) by one writer thread, read by the
gateway's own serial reader threads, decoded, windowed, classified, decided and
published to a real Mosquitto by ``Gateway.run`` on its own thread. After a warm-up it
reads the CPU clocks of the threads over ``--seconds`` of stream:

- **main loop** CPU per window, and of that the model calls (the pipelines'
  ``inference_s``: each window's share of its call's time) and the rest, *the runtime's
  own work*;
- **the gateway process** CPU per window (main loop, serial reader threads, paho's
  network thread), the writer thread excluded.

Writes ``bench/results/main_loop.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench.capacity import default_bundle, encoded_session  # noqa: E402
from bench.common import Figure, pin_one_core, write_result  # noqa: E402
import runtime_support as rs  # noqa: E402

FS = 60.0
WARMUP_S = 4.0  # every wearer past its first window and the caches settled before the clocks are read


def thread_cpu(t: threading.Thread) -> float:
    """CPU seconds thread ``t`` has used (Linux, macOS)."""
    return time.clock_gettime(time.pthread_getcpuclockid(t.ident))


def run(n: int, seconds: float, bundle: Path, frames: list[bytes], broker_url: str, work: Path) -> dict:
    """One trial of ``n`` wearables for ``seconds`` of measured stream; returns its figures."""
    from alanet.device.config import WearableConfig, load_config
    from alanet.device.runtime import Gateway
    from alanet.firmware_bridge.codec import Encoder

    wears = [rs.PtyWearable() for _ in range(n)]
    cfg = load_config(None, {"port": "/dev/null", "bundle": str(bundle), "broker": broker_url, "gateway": f"ml{n}",
                             "state_dir": str(work / f"ml-{n}")})
    cfg = replace(cfg, wearables=tuple(WearableConfig(f"w{i}", w.path) for i, w in enumerate(wears)))
    gw = Gateway(cfg)
    loop = threading.Thread(target=gw.run, kwargs={"install_signals": False}, name="main-loop", daemon=True)
    loop.start()
    try:
        for w in wears:
            if not w.wait_opened_by(os.getpid(), timeout=30, settle=0.0 if w is not wears[-1] else 0.5):
                raise RuntimeError(f"the gateway did not open {w.path}")
        rng = np.random.default_rng(n)
        phase = rng.uniform(0, 0.75, n)  # wearers started at different moments
        offset = rng.integers(1, len(frames) - int((seconds + WARMUP_S + 1) * FS), n)
        total = seconds + WARMUP_S
        schedule = sorted((phase[i] + k / FS, i, k) for i in range(n) for k in range(int(total * FS)))
        marks: dict[str, tuple] = {}
        writer_cpu = [0.0, 0.0]

        def write() -> None:
            hello = Encoder().hello(0)
            for w in wears:
                w.write(hello)  # each wearable announces itself
            start = time.monotonic()
            measuring = False
            for at, i, k in schedule:
                if not measuring and at >= WARMUP_S:
                    measuring = True
                    writer_cpu[0] = time.thread_time()
                    marks["start"] = snapshot()
                delay = start + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                wears[i].write(frames[offset[i] + k])
            time.sleep(0.5)  # the last windows through
            writer_cpu[1] = time.thread_time()
            marks["end"] = snapshot()

        def snapshot() -> tuple:
            return (thread_cpu(loop), time.process_time(), sum(w.pipeline.counters.inference_s for w in gw.wearables),
                    sum(w.pipeline.counters.windows for w in gw.wearables), time.monotonic())

        writer = threading.Thread(target=write, name="writer")
        writer.start()
        writer.join()
    finally:
        gw.stop()
        loop.join(15)
        for w in wears:
            w.close()
    (l0, p0, b0, w0, t0), (l1, p1, b1, w1, t1) = marks["start"], marks["end"]
    windows = w1 - w0
    if windows <= 0:
        raise RuntimeError(f"{n} wearables: no window completed in {seconds:g} s")
    ms = 1000.0 / windows
    loop_cpu, model = (l1 - l0) * ms, (b1 - b0) * ms
    process = ((p1 - p0) - (writer_cpu[1] - writer_cpu[0])) * ms
    return {"wearables": n, "seconds": round(t1 - t0, 2), "windows": windows,
            "main_loop_cpu_ms_per_window": round(loop_cpu, 4), "model_ms_per_window": round(model, 4),
            "runtime_ms_per_window": round(loop_cpu - model, 4), "process_cpu_ms_per_window": round(process, 4),
            "batches": gw.batches, "mean_batch": round(gw.batch_windows / gw.batches, 2) if gw.batches else None,
            "core_share": round((p1 - p0 - (writer_cpu[1] - writer_cpu[0])) / (t1 - t0), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wearers", default="1,16,100", help="wearable counts, one trial each (default 1,16,100)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds of stream per trial (default 20)")
    ap.add_argument("--bundle", type=Path, help="bundle (default: models/protective-demo, else the test bundle)")
    ap.add_argument("--out", type=Path, default=None, help="results file (default bench/results/main_loop.json)")
    args = ap.parse_args(argv)
    try:
        counts = [int(v) for v in args.wearers.split(",")]
        if any(c < 1 for c in counts):
            raise ValueError
    except ValueError:
        ap.error(f"--wearers: expected counts >= 1 separated by commas, got {args.wearers!r}")
    if args.seconds < 2:
        ap.error(f"--seconds must be >= 2, got {args.seconds:g}")
    logging.basicConfig(level=logging.ERROR)
    bundle = args.bundle or default_bundle()
    sess = rs.make_session(seed=3, duration_s=args.seconds + WARMUP_S + 30)
    frames = encoded_session(sess)
    from alanet.device.broker import EmbeddedBroker

    trials = []
    with EmbeddedBroker(prefer="mosquitto") as broker, tempfile.TemporaryDirectory(prefix="alanet-loop-") as tmp:
        cpu = pin_one_core()  # the broker stays unpinned; every gateway thread and the writer share this CPU
        print(f"main loop: bundle {bundle}, {args.seconds:g} s per trial after {WARMUP_S:g} s, pinned to CPU {cpu}",
              flush=True)
        for n in counts:
            t = run(n, args.seconds, bundle, frames, broker.url, Path(tmp))
            trials.append(t)
            print(f"  N={n:5d}: main loop {t['main_loop_cpu_ms_per_window']:.3f} ms CPU per window = model "
                  f"{t['model_ms_per_window']:.3f} + runtime's own work {t['runtime_ms_per_window']:.3f}; gateway "
                  f"process {t['process_cpu_ms_per_window']:.3f} ms per window ({t['core_share']:.0%} of the core), "
                  f"{t['windows']} windows, {t['mean_batch']} per model call", flush=True)
    how = ("real Gateway.run on one pinned CPU, pty wearables at 60 Hz in real time, Mosquitto; thread CPU clocks "
           f"over {args.seconds:g} s after a {WARMUP_S:g} s warm-up")
    figs = []
    for t in trials:
        n = t["wearables"]
        figs += [Figure(f"main_loop.runtime_ms_per_window.n{n}", f"Main loop: runtime's own work per window, {n} "
                        "wearables", t["runtime_ms_per_window"], "ms", how),
                 Figure(f"main_loop.model_ms_per_window.n{n}", f"Main loop: model calls per window, {n} wearables",
                        t["model_ms_per_window"], "ms", how)]
    path = write_result("main_loop", {"bundle": str(bundle), "trials": trials}, figs, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
