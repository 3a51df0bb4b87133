"""Support for the rehab tests: a real ALANet bundle with attention outputs, Keras attention, log figures.

The bundle comes from a small ALANet-per-body-part model trained on a synthetic rehab
session (``alanet.convert.tinyrun.make_session_run``) and converted by ``alanet convert``
(float16, WHILE loop, parity-checked attention), built once per machine and code
version in the temp directory. Its decision thresholds are then set from its own
probabilities on the test session, so the gateway raises and clears a few alerts.
TensorFlow runs only in child processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import runtime_support as rs

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["convert/tinyrun.py", "convert/export.py", "convert/convert.py", "convert/worker.py", "convert/parity.py",
           "device/attention.py", "device/inference.py", "train/models/alanet.py", "train/models/layers.py",
           "train/models/parts_lstm.py", "train/models/defaults.py",
           "tests/rehab_support.py", "tests/runtime_support.py"]


def _cache_dir() -> Path:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((REPO / name).read_bytes())
    return Path(tempfile.gettempdir()) / f"alanet-test-attention-{h.hexdigest()[:16]}"


def attention_bundle(sess: rs.Session) -> tuple[Path, Path]:
    """``(bundle, run_dir)``: the converted bundle (decision thresholds fitted to ``sess``) and its run."""
    from alanet.convert.tinyrun import cached_tiny_run

    root = _cache_dir()
    run = cached_tiny_run(root, "session-run")
    base = root / "bundle-converted"
    if not (base / "manifest.json").is_file():
        r = subprocess.run([sys.executable, "-m", "alanet", "convert", str(run), "--quantize", "float16", "--route",
                            "loop", "--out", str(base), "--force"], capture_output=True, text=True, timeout=900,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
        assert r.returncode == 0, r.stderr[-3000:]
    key = hashlib.sha256(sess.angles.tobytes()).hexdigest()[:12]
    dest = root / f"bundle-{key}"
    if not (dest / "manifest.json").is_file():
        _fit_thresholds(base, dest, sess)
    return dest, run


def _fit_thresholds(src: Path, dest: Path, sess: rs.Session) -> None:
    """Copy the bundle with raise/clear thresholds at the 70th/45th percentile of its probabilities on ``sess``."""
    from alanet.device.bundle import load_bundle, write_bundle
    from alanet.device.inference import ModelRunner

    b = load_bundle(src)
    wins, _ = rs.session_windows(sess, b.normalizer)
    p = ModelRunner.from_bundle(b).predict_many(wins)[:, 1]
    manifest = dict(b.manifest)
    manifest["decision"] = {**manifest["decision"], "smoothing_alpha": 1.0,
                            "raise_threshold": round(float(np.quantile(p, 0.70)), 6),
                            "clear_threshold": round(float(np.quantile(p, 0.45)), 6)}
    for k in ("model_file", "model_sha256", "model_bytes"):
        manifest.pop(k, None)
    write_bundle(dest, manifest, (src / "model.tflite").read_bytes(), force=True)


KERAS_ATTENTION = r"""
import json, sys
import numpy as np
import keras
from alanet.convert.export import load_trained, with_attention
from alanet.convert.rundir import load_run
run = load_run(sys.argv[1])
x = np.load(sys.argv[2])
model, info = with_attention(load_trained(run), run.model_name, len(run.config["groups"]))
probs, t, b = model.predict(x, verbose=0, batch_size=32)
np.savez(sys.argv[3], probs=probs, temporal=np.asarray(t).reshape(len(x), -1), body=np.asarray(b).reshape(len(x), -1))
"""


def keras_attention(run: Path, windows: np.ndarray, work: Path) -> dict[str, np.ndarray]:
    """The trained Keras model's probabilities and attention on normalised windows (TensorFlow in a child)."""
    x, out = work / "windows.npy", work / "keras_attention.npz"
    np.save(x, windows.astype(np.float32))
    r = subprocess.run([sys.executable, "-c", KERAS_ATTENTION, str(run), str(x), str(out)], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def figures_from_log(path: Path) -> dict[str | None, dict[str, float]]:
    """Per-exercise figures straight from a session log's lines (independent of alanet.device.report)."""
    stride = None
    out: dict[str | None, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("k") == "start":
            stride = rec["stride_s"]
        elif rec.get("k") == "w":
            e = out.setdefault(rec["ex"], {"windows": 0, "protective": 0, "episodes": 0})
            e["windows"] += 1
            e["protective"] += rec["st"] == "active"
        elif rec.get("k") == "alert" and rec.get("state") == "raised":
            out.setdefault(rec["ex"], {"windows": 0, "protective": 0, "episodes": 0})["episodes"] += 1
    assert stride is not None, "no start line"
    return {ex: {"seconds": round(e["windows"] * stride, 2), "protective_s": round(e["protective"] * stride, 2),
                 "episodes": e["episodes"]} for ex, e in out.items()}


def figures_from_report(html: str) -> dict[str | None, dict[str, float]]:
    """The per-exercise table of a report page (``data-value`` of each cell)."""
    import re

    table = html.split('id="per-exercise"', 1)[1].split("</table>", 1)[0]
    out: dict[str | None, dict[str, float]] = {}
    for ex, row in re.findall(r'<tr data-exercise="([^"]+)">(.*?)</tr>', table):
        cells = dict(re.findall(r'data-field="([^"]+)" data-value="([^"]+)"', row))
        out[None if ex == "none" else ex] = {"seconds": round(float(cells["seconds"]), 2),
                                             "protective_s": round(float(cells["protective_s"]), 2),
                                             "episodes": int(cells["episodes"])}
    return out
