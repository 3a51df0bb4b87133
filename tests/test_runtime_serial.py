"""The gateway survives the wearable being unplugged and plugged back in (real pty)."""

from __future__ import annotations

import time
from dataclasses import replace

import runtime_support as rs
from alanet.device.config import load_config
from alanet.device.runtime import Gateway
from alanet.firmware_bridge.simulator import Simulator


def test_unplug_replug_keeps_running(tmp_path, mosquitto):
    sess, bundle = rs.cached_bundle(3, 120.0)
    import numpy as np

    bd = np.zeros((3600, 33), np.float32)
    bd[:, :13], bd[:, 26:30] = sess.angles[:3600], sess.emg[:3600]
    # unplugged for 1 s every 12 s of session time
    sim = Simulator(bd, speed=10.0, faults="disconnect=12,down=1", seed=1)
    cfg = load_config(None, {"port": sim.path, "bundle": str(bundle), "broker": mosquitto.url, "gateway": "g",
                             "state_dir": str(tmp_path / "st")})
    results = []
    gw = Gateway(replace(cfg, heartbeat_s=0.5), on_result=results.append)
    import threading

    t = threading.Thread(target=gw.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    sim.start()
    assert sim.join(60) and sim.error is None
    time.sleep(1.0)
    gw.stop()
    t.join(15)
    truth = sim.truth()["faults"]
    sim.close()
    w = gw.wearables[0]
    assert truth["disconnects"] >= 3
    assert w.link is None  # closed at shutdown
    p = w.pipeline.counters
    assert w.reconnects >= 3  # the serial link reopened after every unplug
    assert p.frames == 3600 - len(truth["lost"])
    assert p.resets >= 3  # each unplug loses ~60 frames: the window restarts
    # windows kept coming after every replug: the last window ends near the session's end
    assert results and results[-1].seq >= 3600 - 1 - rs.S - 60
    assert all(r.seq >= 0 for r in results)


def test_a_busy_main_loop_joins_each_wearers_queued_reads(tmp_path, mosquitto):
    """Reads that queue while the main loop is busy are handled as one read per wearer (byte for byte, in
    order, every frame accepted); an idle loop handles a read as it comes (real ptys, real reader threads)."""
    import os
    import threading

    from alanet.device.config import WearableConfig

    sess, bundle = rs.cached_bundle(3, 120.0)
    wears = [rs.PtyWearable() for _ in range(2)]
    cfg = load_config(None, {"port": "/dev/null", "bundle": str(bundle), "broker": mosquitto.url, "gateway": "g",
                             "state_dir": str(tmp_path / "st")})
    gw = Gateway(replace(cfg, wearables=tuple(WearableConfig(f"w{i}", w.path) for i, w in enumerate(wears))))
    reads: list[tuple[int, bytes]] = []  # what the reader threads handed over
    calls: list[tuple[int, bytes]] = []  # what the main loop processed
    busy = threading.Event()  # set: the main loop may go on
    hand_over, process = gw.on_serial_data, gw.process
    gw.on_serial_data = lambda i, b: (reads.append((i, b)), hand_over(i, b))

    def slow_process(i, data, defer=False):
        busy.wait(20)  # the first read keeps the loop busy until the test lets it go
        calls.append((i, data))
        process(i, data, defer=defer)

    gw.process = slow_process
    th = threading.Thread(target=gw.run, kwargs={"install_signals": False}, daemon=True)
    th.start()
    n = 300
    try:
        for w in wears:
            assert w.wait_opened_by(os.getpid(), timeout=20, settle=0.1)
        for k in range(0, n, 10):  # 30 separate writes per wearer, each its own read
            for w in wears:
                w.frames(sess, k, k + 10)
            time.sleep(0.01)
        time.sleep(0.3)
        queued = len(reads)
        busy.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(w.pipeline.counters.frames < n for w in gw.wearables):
            time.sleep(0.02)
        assert len(calls) <= 3 and queued >= 20  # one blocked read, then one joined read per wearer
        before = len(calls)
        wears[0].frames(sess, n, n + 1)  # idle now: the next frame is handled on its own, at once
        while time.monotonic() < deadline and gw.wearables[0].pipeline.counters.frames < n + 1:
            time.sleep(0.02)
    finally:
        busy.set()
        gw.stop()
        th.join(15)
        for w in wears:
            w.close()
    for i, w in enumerate(gw.wearables):
        assert b"".join(b for j, b in calls if j == i) == b"".join(b for j, b in reads if j == i)
        assert w.decoder.stats.resyncs == 0 and w.pipeline.counters.gaps == 0
    assert [w.pipeline.counters.frames for w in gw.wearables] == [n + 1, n]
    # idle: the frame's reads (the reader's first byte, then the rest) are handled as they come, at most joined
    assert 1 <= len(calls) - before <= len(reads) - queued
    assert b"".join(b for _, b in calls[before:]) == b"".join(b for _, b in reads[queued:])
