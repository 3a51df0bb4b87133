"""What drove an alert: the attention the gateway publishes is the Keras model's attention for that window.

A real ALANet-per-body-part model (trained in a child process on a synthetic rehab
session) is converted by ``alanet convert`` with its attention outputs; the gateway
(pty wearable → frames → LiteRT → decisions → real Mosquitto) runs it on another
session. For every alert and every state message, the attention carried in the
payload is compared with the trained Keras model's attention on the same window,
rebuilt offline from the frames: within the float16 quantisation tolerance.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from test_runtime_e2e import GW, Subscriber

import rehab_support as rh
import runtime_support as rs
from alanet.device.attention import PROFILE_BINS
from alanet.device.payload_schemas import validator

TOL = 0.01  # float16 weights: |Δ| of an attention weight (parity measured ~1e-4; see docs/rehab.md)


@pytest.fixture(scope="module")
def setup():
    sess = rs.make_session(seed=3, duration_s=120.0)
    bundle, run = rh.attention_bundle(sess)
    return sess, bundle, run


def test_alert_attention_equals_the_keras_attention_of_its_window(setup, mosquitto, tmp_path):
    sess, bundle, run = setup
    from alanet.device.bundle import load_bundle
    from alanet.device.config import load_config
    from alanet.device.runtime import Gateway

    b = load_bundle(bundle)
    att_spec = b.manifest["attention"]
    assert att_spec["body"]["axis"] == "parts" and len(att_spec["body"]["names"]) == 14
    assert b.manifest["parity"]["attention"]["body_tv"] <= 0.02
    wear = rs.PtyWearable()
    cfg = load_config(None, {"port": wear.path, "bundle": str(bundle), "broker": mosquitto.url, "gateway": GW,
                             "wearer": "w1", "state_dir": str(tmp_path / "state")})
    gw = Gateway(cfg)
    sub = Subscriber(mosquitto.port)
    th = threading.Thread(target=gw.run, kwargs={"install_signals": False}, daemon=True)
    th.start()
    try:
        assert wear.wait_opened_by(os.getpid(), timeout=20)
        wear.hello()
        wear.frames(sess, 0, sess.n, pace_hz=rs.FS * 16)
        n_windows = (sess.n - rs.L) // rs.S + 1
        sub.wait(lambda: len(sub.of("/state")) >= n_windows, 30)
    finally:
        gw.stop()
        th.join(15)
        wear.close()
        sub.close()
    states, alerts = sub.of("/state"), sub.of("/alert")
    assert len(states) == n_windows
    assert any(a["state"] == "raised" for a in alerts), "the test session must raise an alert"
    for a in alerts:
        validator("alert").validate(a)
    for s in states[:5]:
        validator("state").validate(s)

    wins, last_seq = rs.session_windows(sess, b.normalizer)
    ref = rh.keras_attention(run, wins, tmp_path)
    by_seq = {int(q): i for i, q in enumerate(last_seq)}
    names = att_spec["body"]["names"]

    def check(payload: dict) -> None:
        i = by_seq[payload["seq"]]
        att, t, body = payload["attention"], ref["temporal"][i], ref["body"][i]
        # when: the peak is the Keras peak (a frame whose Keras weight is within TOL of the maximum)
        assert t[att["peak_frame"]] >= t.max() - TOL
        assert att["peak_s"] == pytest.approx((att["peak_frame"] + 0.5) / rs.FS, abs=1e-3)
        edges = np.linspace(0, len(t), PROFILE_BINS + 1).round().astype(int)
        assert np.allclose(att["profile"], [t[x:y].sum() for x, y in zip(edges[:-1], edges[1:])], atol=TOL)
        # what: each reported part carries the Keras weight, and no other part outweighs the reported ones
        assert len(att["body"]) == 3
        for p in att["body"]:
            assert p["weight"] == pytest.approx(float(body[names.index(p["part"])]), abs=TOL)
        assert min(p["weight"] for p in att["body"]) >= np.sort(body)[-3] - TOL
        if "probabilities" in payload:  # state messages: the probabilities agree as well
            assert payload["probabilities"]["protective"] == pytest.approx(float(ref["probs"][i][1]), abs=TOL)

    for a in alerts:
        check(a)
    for s in states:
        check(s)
    raised = next(a for a in alerts if a["state"] == "raised")
    print(f"{len(alerts)} alerts, {len(states)} windows checked; first raise: "
          f"{[p['label'] for p in raised['attention']['body']]}, peak {raised['attention']['peak_s']} s")
