"""Support for the flashing tests: a family of real bundles built once per test session.

One real TFLite model (``runtime_support.build_bundle``: TensorFlow's converter in a
subprocess, run by LiteRT here) is re-wrapped into bundles with ``write_bundle``:
v1 and v2 (bundle versions 1 and 2; v2 has other normalisation statistics, so its
probabilities differ), signed with a trusted key, unsigned, signed with a foreign key,
with a flipped model byte, for another channel layout, and v3 for another gateway
only. No tests here.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import runtime_support as rs

GW = "gw-flash"
SCHEMAS = Path(__file__).resolve().parents[1] / "device" / "flash" / "schemas"


def validate(payload: dict, name: str) -> None:
    """Check a payload against ``device/flash/schemas/<name>.schema.json``."""
    import jsonschema

    jsonschema.validate(payload, json.loads((SCHEMAS / f"{name}.schema.json").read_text()))


@dataclass(frozen=True)
class Bundles:
    root: Path
    key: Path  # trusted private key (key.pub next to it)
    foreign_key: Path
    v1: Path  # signed, trusted
    v2: Path  # signed, trusted, other normalisation
    v2_unsigned: Path
    v2_foreign: Path
    v2_flipped: Path
    other_layout: Path
    v3_unsigned: Path
    v3_elsewhere: Path  # signed, bundle_version 3, for gateway "gw-elsewhere" only

    @property
    def pub(self) -> Path:
        return Path(f"{self.key}.pub")


def build_bundles(base: Path, sess: rs.Session) -> Bundles:
    """Build (once per directory) every bundle the flashing tests use."""
    from alanet.device.bundle import MANIFEST_FILE, MODEL_FILE, write_bundle
    from alanet.device.signing import write_keypair

    root = base / "flash-bundles"
    names = dict(key=root / "trusted.key", foreign_key=root / "foreign.key", v1=root / "v1", v2=root / "v2",
                 v2_unsigned=root / "v2-unsigned", v2_foreign=root / "v2-foreign", v2_flipped=root / "v2-flipped",
                 other_layout=root / "other-layout", v3_unsigned=root / "v3-unsigned",
                 v3_elsewhere=root / "v3-elsewhere")
    if (root / "done").exists():
        return Bundles(root, **names)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    base_dir = rs.build_bundle(root / "base", sess, model_id="flash-v1")
    manifest = dict(json.loads((base_dir / MANIFEST_FILE).read_text()), bundle_version=1)
    model = (base_dir / MODEL_FILE).read_bytes()
    write_keypair(names["key"])
    write_keypair(names["foreign_key"])

    v2m = dict(manifest, model_id="flash-v2", bundle_version=2)
    v2m["normalization"] = dict(manifest["normalization"], std=[s * 1.7 for s in manifest["normalization"]["std"]])
    write_bundle(names["v1"], manifest, model, signing_key=names["key"])
    write_bundle(names["v2"], v2m, model, signing_key=names["key"])
    write_bundle(names["v2_unsigned"], v2m, model)
    write_bundle(names["v2_foreign"], v2m, model, signing_key=names["foreign_key"])
    write_bundle(names["v2_flipped"], v2m, model, signing_key=names["key"])
    p = names["v2_flipped"] / MODEL_FILE
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    other = dict(v2m, model_id="flash-other-layout")
    chans = list(manifest["channels"])
    other["channels"] = chans[:26] + chans[26:][::-1]  # the sEMG channels in another order
    write_bundle(names["other_layout"], other, model, signing_key=names["key"])
    write_bundle(names["v3_unsigned"], dict(v2m, model_id="flash-v3", bundle_version=3), model)
    write_bundle(names["v3_elsewhere"], dict(v2m, model_id="flash-v3-elsewhere", bundle_version=3,
                                             gateways=["gw-elsewhere"]), model, signing_key=names["key"])
    (root / "done").write_text("ok")
    return Bundles(root, **names)


class StandInRuntime:
    """A stand-in for the gateway's main loop: frames → a real WearerPipeline, model swaps between windows.

    ``on_activate`` (handed to FlashAgent) builds the new ModelSpec, queues it and
    waits until the loop has applied it, like the gateway does.
    """

    def __init__(self, bundle, sess: rs.Session) -> None:
        from alanet.device.inference import ModelRunner
        from alanet.device.pipeline import ModelSpec, WearerPipeline

        self.sess = sess
        self.pipeline = WearerPipeline("w1", ModelSpec.from_bundle(bundle, ModelRunner.from_bundle(bundle)))
        self.pipeline.handle([rs.hello()])  # the wearable announced itself
        self.results: list[tuple[str, object]] = []  # (model id, WindowResult)
        self.swaps: list[tuple[int, str]] = []  # (frames fed before the swap, model id)
        self._pending: list[tuple[object, threading.Event]] = []
        self._lock = threading.Lock()
        self.fed = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def on_activate(self, bundle) -> None:
        from alanet.device.inference import ModelRunner
        from alanet.device.pipeline import ModelSpec

        spec = ModelSpec.from_bundle(bundle, ModelRunner.from_bundle(bundle))
        done = threading.Event()
        with self._lock:
            self._pending.append((spec, done))
        if not done.wait(10):
            raise RuntimeError("the runtime did not apply the model in time")

    def _apply(self) -> None:
        from alanet.device.flash.swap import swap_model

        with self._lock:
            pending, self._pending = self._pending, []
        for spec, done in pending:
            swap_model(self.pipeline, spec)
            self.swaps.append((self.fed, spec.model_id))
            done.set()

    def run(self, start: int, stop: int, pace_hz: float, hold_at: int | None = None,
            hold: threading.Event | None = None) -> None:
        from alanet.firmware_bridge.protocol import Frame

        t0 = time.perf_counter()
        for i in range(start, stop):
            if self.stop.is_set():
                return
            if hold is not None and i == hold_at:
                hold.wait(30)
            self._apply()
            delay = t0 + (i - start) / pace_hz - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            f = Frame(i, int(round(i * 1000 / rs.FS)), tuple(map(float, self.sess.angles[i])),
                      tuple(map(float, self.sess.emg[i])))
            for r in self.pipeline.handle([f]):
                self.results.append((self.pipeline.spec.model_id, r))
            self.fed = i + 1
        while not self.stop.is_set():  # idle: keep applying swaps (rollbacks) until stopped
            self._apply()
            time.sleep(0.01)

    def start(self, *a, **kw) -> "StandInRuntime":
        self.thread = threading.Thread(target=self.run, args=a, kwargs=kw, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float = 60) -> None:
        assert self.thread is not None
        self.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive()


def offline_probs(bundle_dir: Path, sess: rs.Session) -> dict[int, np.ndarray]:
    """seq of each window's last frame → probabilities, computed offline with the bundle."""
    from alanet.device.bundle import load_bundle
    from alanet.device.inference import ModelRunner

    b = load_bundle(bundle_dir)
    wins, last = rs.session_windows(sess, b.normalizer)
    probs = ModelRunner.from_bundle(b).predict_many(wins)
    return {int(s): p for s, p in zip(last, probs)}


class ModelWatcher:
    """Records the retained ``alanet/<gw>/model`` reports."""

    def __init__(self, port: int, gateway: str = GW) -> None:
        import paho.mqtt.client as mqtt

        self.reports: list[dict] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{gateway}-{time.monotonic_ns()}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(f"alanet/{gateway}/model", qos=1)
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.1, 0.5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _on_message(self, c, u, m) -> None:
        d = json.loads(m.payload)
        validate(d, "model")  # an invalid report fails the test (wait_for never sees it)
        with self.lock:
            self.reports.append(d)

    def latest(self) -> dict | None:
        with self.lock:
            return self.reports[-1] if self.reports else None

    def wait_for(self, pred, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.latest()
            if r is not None and pred(r):
                return r
            time.sleep(0.02)
        raise AssertionError(f"no matching model report; last: {self.latest()}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_until(pred, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting")
