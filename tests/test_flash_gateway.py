"""Flashing a real running gateway: pty wearable → Gateway (LiteRT) → Mosquitto, bundle sent mid-session."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

import runtime_support as rs
from test_flash_support import GW, ModelWatcher, wait_until

from alanet.device.config import load_config
from alanet.device.flash.sender import REFUSED, TOOK, read_archive, send_to_fleet
from alanet.device.runtime import Gateway, load_model


def start_gateway(cfg, results):
    """The real gateway (``alanet run`` in-process): it starts its own flash agent (``[flash] enabled``)."""
    gw = Gateway(cfg, on_result=lambda r: results.append((gw.spec.model_id, r)))
    t = threading.Thread(target=gw.run, kwargs={"install_signals": False}, daemon=True)
    t.start()
    return gw, t


def test_flash_a_running_gateway_mid_session(tmp_path, mosquitto, bundles, sess):
    wear = rs.PtyWearable()
    cfg = load_config(None, {"port": wear.path, "bundle": str(bundles.v1), "broker": mosquitto.url, "gateway": GW,
                             "wearer": "w1", "state_dir": str(tmp_path / "state")})
    cfg = replace(cfg, trusted_keys=(str(bundles.pub),), allow_unsigned=False, heartbeat_s=0.5)
    results: list = []
    gw, t = start_gateway(cfg, results)
    watch = ModelWatcher(mosquitto.port)
    try:
        watch.wait_for(lambda r: r.get("model") == "flash-v1" and r.get("state") == "active")
        wear.hello()
        writer = threading.Thread(target=wear.frames, args=(sess, 0, sess.n), kwargs={"pace_hz": 900.0}, daemon=True)
        writer.start()
        wait_until(lambda: wear.written > sess.n // 4)
        archive, name = read_archive(bundles.v2)
        out = send_to_fleet(archive, [GW], mosquitto.url, name=name, timeout=30, progress=False)[0]
        assert out.status == TOOK and out.model == "flash-v2", out
        assert wear.written < sess.n  # the switch happened while frames were streaming
        archive, name = read_archive(bundles.v2_foreign)
        bad = send_to_fleet(archive, [GW], mosquitto.url, name=name, timeout=30, progress=False)[0]
        assert bad.status == REFUSED and "not signed by a trusted key" in bad.reason
        rep = watch.wait_for(lambda r: r.get("state") == "refused")
        assert rep["model"] == "flash-v2" and rep["task"] == "protective" and rep["window"] == rs.L
        writer.join(30)
        n_windows = (sess.n - rs.L) // rs.S + 1
        wait_until(lambda: len(results) >= n_windows, 30)
        # Roll back and forth again over MQTT: the gateway keeps running throughout.
        back = send_to_fleet(None, [GW], mosquitto.url, timeout=30, progress=False, sign=bundles.key)[0]
        assert back.status == TOOK and back.model == "flash-v1" and gw.spec.model_id == "flash-v1", back
        rep = watch.wait_for(lambda r: r.get("model") == "flash-v1" and r.get("state") == "active")
        assert rep["previous"] == "flash-v2"
        again = send_to_fleet(None, [GW], mosquitto.url, timeout=30, progress=False, sign=bundles.key)[0]
        assert again.status == TOOK and gw.spec.model_id == "flash-v2"
    finally:
        gw.stop()
        t.join(20)
        watch.close()
        wear.close()
    pc = gw.wearables[0].pipeline.counters
    assert (pc.frames, pc.lost, pc.resets) == (sess.n, 0, 0)
    assert [r.seq for _, r in results] == [rs.L - 1 + k * rs.S for k in range(n_windows)]  # no window lost
    models = [m for m, _ in results]
    k = models.index("flash-v2")
    assert 0 < k < len(models) and models == ["flash-v1"] * k + ["flash-v2"] * (len(models) - k)
    # A restarted gateway starts with the flashed bundle, verified again.
    bundle, spec = load_model(cfg)
    assert spec.model_id == "flash-v2" and bundle.signed_by and bundle.path.parent.name == "bundles"


def test_flash_section_of_the_gateway_config(tmp_path, bundles):
    from alanet.errors import InputError

    base = f'gateway = "g1"\nstate_dir = "{tmp_path}"\n[model]\nbundle = "{bundles.v1}"\n[[wearable]]\nport = "/dev/null"\n'
    p = tmp_path / "gw.toml"
    p.write_text(base)
    cfg = load_config(p)
    assert cfg.flash_enabled is True and cfg.flash_allow_unsigned is False  # unsigned: never by default
    p.write_text(base + "[flash]\nenabled = false\nallow_unsigned = true\n")
    cfg = load_config(p)
    assert cfg.flash_enabled is False and cfg.flash_allow_unsigned is True
    p.write_text(base + "[flash]\nallow_unsigend = true\n")
    with pytest.raises(InputError, match="flash.allow_unsigend: unknown key"):
        load_config(p)
