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
