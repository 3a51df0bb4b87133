"""Batched inference: a bundle converted with ``--route fused --batch-sizes 1,4`` (one model file per
size, the fused LSTM op) classifies N windows in native-size invokes with the same probabilities and
attention as N single invokes; its extra model file is hashed, self-tested, packed and staged with it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["convert/tinyrun.py", "convert/export.py", "convert/fused.py", "convert/convert.py", "convert/worker.py",
           "device/inference.py", "device/bundle.py", "device/schemas/manifest.schema.json", "tests/test_batch_inference.py"]


@pytest.fixture(scope="module")
def fused_bundle() -> Path:
    """A small ALANet (4 units, 60-frame windows, EmoPain channels) converted with the fused route at batch 1 and 4
    (built once per code version, in a temp-dir cache)."""
    pytest.importorskip("tf_keras")
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((REPO / name).read_bytes())
    root = Path(tempfile.gettempdir()) / f"alanet-test-batch-{h.hexdigest()[:16]}"
    bundle = root / "bundle"
    if not (bundle / "manifest.json").is_file():
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        run = root / "run"
        if not (run / "metrics.json").is_file():
            code = ("from alanet.convert.tinyrun import make_session_run; import sys; make_session_run(sys.argv[1], "
                    "model='alanet', units=4, seconds=90, epochs=2, window=60, stride=30)")
            subprocess.run([sys.executable, "-c", code, str(run)], check=True, capture_output=True, timeout=600, env=env)
        r = subprocess.run([sys.executable, "-m", "alanet", "convert", str(run), "--quantize", "float16", "--route",
                            "fused", "--batch-sizes", "1,4", "--out", str(bundle), "--force"],
                           capture_output=True, text=True, timeout=900, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
    return bundle


def _windows(bundle: Path, n: int) -> np.ndarray:
    with np.load(bundle.parent / "run" / "parity_windows.npz") as z:
        x = z["test_x"].astype(np.float32)
    return x[np.arange(n) % len(x)]


def test_a_batch_gives_the_probabilities_and_attention_of_single_invokes(fused_bundle):
    from alanet.device.bundle import load_bundle
    from alanet.device.inference import ModelRunner

    b = load_bundle(fused_bundle)
    m = b.manifest
    assert m["route"] == "fused" and m["stateful"] is True
    assert [e["file"] for e in m["batch_models"]] == ["model-b4.tflite"]
    runner = ModelRunner.from_bundle(b)
    assert runner.batch_sizes == b.batch_sizes == (1, 4)
    x = _windows(fused_bundle, 11)
    single, temporal, body = [], [], []
    for w in x:
        single.append(runner.predict(w))
        t, a = runner.attention()
        temporal.append(t)
        body.append(a)
    got = runner.predict_batch(x)
    assert got.shape == (11, 2)
    np.testing.assert_allclose(got, np.stack(single), atol=1e-5)
    t_b, a_b = runner.attention_batch()
    np.testing.assert_allclose(t_b, np.stack(temporal), atol=1e-5)
    np.testing.assert_allclose(a_b, np.stack(body), atol=1e-5)
    # Every chunk size the plan may pick gives the same numbers: the batch-4 model on its own, padded or full.
    for k in (1, 3, 4):
        np.testing.assert_allclose(runner.predict_at(4, x[:k]), np.stack(single[:k]), atol=1e-5)
    # The plan covers N with native sizes only (padding at most one chunk).
    for n in (1, 3, 4, 5, 11, 64):
        plan = runner.plan(n)
        assert set(plan) <= {1, 4} and sum(plan) >= n and sum(plan) - n < 4
    assert runner.predict_batch(x[:0]).shape == (0, 2)
    with pytest.raises(ValueError):
        runner.predict_batch(x[:, :-1])


def test_a_bundle_without_batch_models_runs_batches_one_window_at_a_time(fused_bundle, tmp_path):
    from alanet.device.bundle import MODEL_FILE, load_bundle, write_bundle
    from alanet.device.inference import ModelRunner

    m = json.loads((fused_bundle / "manifest.json").read_text())
    m.pop("batch_models")
    old = write_bundle(tmp_path / "old", m, (fused_bundle / MODEL_FILE).read_bytes())
    assert not (old / "model-b4.tflite").exists()
    runner = ModelRunner.from_bundle(load_bundle(old))
    assert runner.batch_sizes == (1,) and runner.plan(3) == (1, 1, 1)
    x = _windows(fused_bundle, 3)
    np.testing.assert_allclose(runner.predict_batch(x), np.stack([runner.predict(w) for w in x]), atol=1e-6)


def test_the_batch_model_is_verified_packed_and_staged_with_the_bundle(fused_bundle, tmp_path):
    import shutil

    from alanet.convert.inspect_cmd import inspect_bundle
    from alanet.device.bundle import BundleError, load_bundle, pack, unpack
    from alanet.device.flash.store import BundleStore

    report = inspect_bundle(fused_bundle)
    assert report["batch_sizes"] == [1, 4] and report["batch_models"][0]["file"] == "model-b4.tflite"
    assert report["bundle_bytes"] == sum((fused_bundle / f).stat().st_size for f in ("model.tflite", "model-b4.tflite"))

    back = unpack(pack(fused_bundle, tmp_path / "b.tar.xz"), tmp_path / "unpacked")
    assert (back / "model-b4.tflite").read_bytes() == (fused_bundle / "model-b4.tflite").read_bytes()
    assert load_bundle(back).batch_sizes == (1, 4)
    staged = BundleStore(tmp_path / "store").stage(fused_bundle)
    assert (staged / "model-b4.tflite").is_file()

    bad = tmp_path / "bad"
    shutil.copytree(fused_bundle, bad)
    data = bytearray((bad / "model-b4.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model-b4.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model-b4.tflite: SHA-256 mismatch"):
        load_bundle(bad)
    (bad / "model-b4.tflite").unlink()
    with pytest.raises(BundleError, match="model-b4.tflite: missing"):
        load_bundle(bad)

    # A batch model that is not at its listed batch is refused (the self-test runs every model file).
    swapped = tmp_path / "swapped"
    shutil.copytree(fused_bundle, swapped)
    m = json.loads((swapped / "manifest.json").read_text())
    other = (swapped / "model.tflite").read_bytes()  # the batch-1 model, listed as the batch-4 one
    (swapped / "model-b4.tflite").write_bytes(other)
    m["batch_models"][0].update(sha256=hashlib.sha256(other).hexdigest(), bytes=len(other))
    (swapped / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="batch"):
        load_bundle(swapped)
