"""Support for the gateway runtime tests and benchmark: a synthetic session, a small
real TFLite bundle built from it, the offline expectation, and a pty "wearable".

The bundle's model is tiny and hand-weighted (global average pool → Dense → softmax):
the protective probability rises with the window's mean normalised joint energy, with
the threshold at the session's median, so a rehab session yields a few alerts. It is
converted by TensorFlow's TFLite converter in a subprocess (TensorFlow stays out of
the test process) and run by LiteRT like any bundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alanet.device.features import Normalizer, emopain_frame_features
from alanet.device.windowing import window_starts

FS = 60.0
L, S = 180, 45

BUILD_MODEL = r"""
import json, sys
import numpy as np
import tensorflow as tf
spec = json.loads(sys.argv[1])
inp = tf.keras.Input(shape=(spec["L"], 30), batch_size=1)
h = tf.keras.layers.GlobalAveragePooling1D()(inp)
K = spec["classes"]
out = tf.keras.layers.Dense(K, activation="softmax")(h)
m = tf.keras.Model(inp, out)
# logit_j = j * k * (mean normalised energy - c): more movement -> higher class
w = np.zeros((30, K), np.float32)
for j in range(K):
    w[13:26, j] = j * spec["k"] / 13.0
m.layers[-1].set_weights([w, np.array([-j * spec["k"] * spec["c"] for j in range(K)], np.float32)])
conv = tf.lite.TFLiteConverter.from_keras_model(m)
open(spec["out"], "wb").write(conv.convert())
"""


@dataclass(frozen=True)
class Session:
    angles: np.ndarray  # [T, 13]
    emg: np.ndarray  # [T, 4]
    protective: np.ndarray  # [T] 0/1

    @property
    def n(self) -> int:
        return int(self.angles.shape[0])


def hello(sample_rate_hz: float = FS, device_id: str = "test-wear"):
    """The HELLO of an EmoPain-layout wearable (a pipeline drops DATA until it has one)."""
    from alanet.firmware_bridge.protocol import DEFAULT_LAYOUT, LAYOUTS, PROTOCOL_VERSION, Hello

    n_a, n_e = LAYOUTS[DEFAULT_LAYOUT]
    return Hello(0, 0, device_id, "test-1.0", PROTOCOL_VERSION, n_a, n_e, float(sample_rate_hz), 0.0, DEFAULT_LAYOUT)


def make_session(seed: int = 3, duration_s: float = 120.0) -> Session:
    from alanet.train.data.synthetic import synth_session

    bd = synth_session(seed=seed, duration_s=duration_s)
    return Session(bd[:, :13].astype(np.float32), bd[:, 26:30].astype(np.float32), bd[:, 32].astype(np.int64))


def session_windows(sess: Session, norm: Normalizer) -> tuple[np.ndarray, np.ndarray]:
    """Normalised windows [N, L, 30] and the seq of each window's last frame (frames numbered from 0)."""
    feats = emopain_frame_features(sess.angles, sess.emg, FS)
    st = window_starts(len(feats), L, S)
    return norm.stream_windows(feats, st, L), st + L - 1


def build_bundle(out_dir: Path, sess: Session, k: float = 6.0, decision: dict | None = None,
                 model_id: str = "test-protective", task: str = "protective", length: int = L,
                 stride: int = S) -> Path:
    """A real, verified bundle (protective: 2 classes; pain: 3) whose model reacts to the session's movement."""
    L, S = length, stride  # noqa: N806 - the window of this bundle
    from alanet.device.bundle import default_decision, encode_window, write_bundle
    from alanet.device.inference import ModelRunner
    from alanet.device.schema import EMOPAIN

    feats = emopain_frame_features(sess.angles, sess.emg, FS)
    norm = Normalizer.fit(feats)
    z = norm.apply(feats)
    st = window_starts(len(z), L, S)
    score = np.array([z[s:s + L, 13:26].mean() for s in st])
    c = float(np.median(score))
    out_dir.mkdir(parents=True, exist_ok=True)
    tfl = out_dir / "model.tmp.tflite"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", BUILD_MODEL, json.dumps({"L": L, "k": k, "c": c, "out": str(tfl),
                                                                  "classes": 3 if task == "pain" else 2})],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    model = tfl.read_bytes()
    tfl.unlink()
    runner = ModelRunner(_write_tmp(out_dir / "probe.tflite", model))
    x = z[st[0]:st[0] + L]
    probe = runner.predict(x)
    (out_dir / "probe.tflite").unlink()
    manifest = {
        "schema": "alanet.bundle/1", "model_id": model_id, "created": "2026-11-24T00:00:00Z",
        "task": task, "labels": ["none", "low", "high"] if task == "pain" else ["normal", "protective"],
        "schema_name": "emopain",
        "channels": EMOPAIN.to_dict()["channels"], "sample_rate_hz": FS, "window": L, "stride": S,
        "normalization": norm.to_dict(), "decision": decision or default_decision(task),
        "quantization": "float32", "stateful": False,
        "input": {"shape": [1, L, 30], "dtype": "float32", "scale": 0.0, "zero_point": 0},
        "output": {"shape": [1, 3 if task == "pain" else 2], "dtype": "float32", "scale": 0.0, "zero_point": 0},
        "training": {"note": "hand-weighted test model"},
        "parity": {"max_abs_diff": 0.0, "agreement": 1.0, "macro_f1_keras": None, "macro_f1_tflite": None,
                   "n_windows": 1, "threshold": 0.99},
        "self_test": [{"input_b64": encode_window(x), "output": [float(v) for v in probe]}],
        "self_test_atol": 1e-4,
    }
    dest = out_dir / "bundle"
    write_bundle(dest, manifest, model, force=True)
    return dest


def _write_tmp(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def expected_events(bundle_dir: Path, sess: Session, n_frames: int | None = None) -> list:
    """What the decision logic yields for the session's windows, computed offline with the bundle."""
    from alanet.device.bundle import load_bundle
    from alanet.device.decisions import decide_offline
    from alanet.device.inference import ModelRunner

    b = load_bundle(bundle_dir)
    runner = ModelRunner.from_bundle(b)
    sub = sess if n_frames is None else Session(sess.angles[:n_frames], sess.emg[:n_frames], sess.protective[:n_frames])
    wins, last = session_windows(sub, b.normalizer)
    probs = runner.predict_many(wins)
    t_end = (last + 1) / FS
    return decide_offline(b.task, b.decision, b.labels, probs, t_end - L / FS, t_end)


class PtyWearable:
    """A pty pair: the runtime opens ``path``; we write encoded frames to the master side."""

    def __init__(self) -> None:
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        from alanet.firmware_bridge.codec import Encoder

        self.enc = Encoder(device_id="test-wear")
        self.written = 0
        self.hello_sent = False
        self._stop = threading.Event()
        self._drain_lock = threading.Lock()

    def wait_opened_by(self, pid: int, timeout: float = 30.0, settle: float = 0.3) -> bool:
        """Wait until process ``pid`` has the port open (its open flushes pending input), then ``settle``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except FileNotFoundError:
                return False
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == self.path:
                        time.sleep(settle)
                        return True
                except OSError:
                    pass
            time.sleep(0.02)
        return False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def hello(self) -> None:
        self.write(self.enc.hello(0))
        self.hello_sent = True

    def frames(self, sess: Session, start: int, stop: int, pace_hz: float | None = None,
               on_written=None) -> None:
        """Write frames [start, stop) (seq = frame index, t_ms = index / fs); optional pacing.

        Like a wearable at boot, the first call announces it with a HELLO unless :meth:`hello` already did.
        """
        if not self.hello_sent:
            self.hello()
        t0 = time.perf_counter()
        for i in range(start, stop):
            if pace_hz:
                delay = t0 + (i - start) / pace_hz - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            self.write(self.enc.frame(int(round(i * 1000 / FS)), sess.angles[i].tolist(), sess.emg[i].tolist(), seq=i))
            if on_written is not None:
                on_written(i)
            self.written = i + 1

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def cached_bundle(sess_seed: int = 3, duration_s: float = 120.0, task: str = "protective", length: int = L,
                  stride: int = S) -> tuple[Session, Path]:
    """The session and its test bundle, built once per machine and code version (temp dir cache)."""
    import hashlib
    import tempfile

    sess = make_session(sess_seed, duration_s)
    h = hashlib.sha256(Path(__file__).read_bytes())
    for a in (sess.angles, sess.emg):
        h.update(a.tobytes())
    h.update(task.encode())
    if (length, stride) != (L, S):
        h.update(f"{length}/{stride}".encode())
    root = Path(tempfile.gettempdir()) / f"alanet-test-bundle-{h.hexdigest()[:16]}"
    dest = root / "bundle"
    if not (dest / "manifest.json").is_file():
        build_bundle(root, sess, task=task, model_id=f"test-{task}", length=length, stride=stride)
    return sess, dest
