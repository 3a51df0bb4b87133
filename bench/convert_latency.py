"""Benchmark: per quantisation, TFLite file size, LiteRT latency per window, parity with Keras.

    .venv/bin/python bench/convert_latency.py [--run RUN_DIR] [--invokes N] [--routes unrolled,loop,fused]

Without ``--run`` it first makes a run the way a user would: synthetic EmoPain-format
data (``alanet data synth``) and a small ALANet (``alanet train``, window 180,
stride 45, 30 channels) in ``bench/results/tmp/``. Each quantisation (float32,
float16, dynamic, int8; ``loop`` and ``fused`` routes: no int8) is converted with ``alanet
convert``; the bundle is timed with the gateway's ``ModelRunner`` (one thread,
N invokes on held-out windows, after a warm-up): p50/p99 ms per window. Agreement
with Keras and macro F1 come from the conversion's parity check. Prints a table
and writes ``bench/results/convert_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from alanet.convert.convert import convert_run
from alanet.device.bundle import load_bundle
from alanet.device.inference import ModelRunner

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "convert_latency.json"
TMP = HERE / "results" / "tmp" / "convert_latency"


def _cli(*args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "alanet", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"alanet {' '.join(args)} failed:\n{res.stderr[-2000:]}")


def make_run(tmp: Path, epochs: int) -> Path:
    data, run = tmp / "data", tmp / "run"
    if not (run / "model.keras").exists():
        _cli("data", "synth", "--out", str(data), "--patients", "4", "--controls", "2", "--duration", "90", "--force")
        _cli("train", "--data", str(data), "--task", "protective", "--model", "alanet", "--eval", "holdout",
             "--test-participants", "P04,C02", "--window", "180", "--stride", "45", "--epochs", str(epochs),
             "--ae-epochs", str(epochs), "--hparam", "units=16", "--quiet", "--force", "--out", str(run))
    return run


def time_runner(runner: ModelRunner, windows: np.ndarray, n: int) -> tuple[float, float, float]:
    """(p50, p99, mean) milliseconds per predict() over n calls, after 20 warm-up calls."""
    for i in range(20):
        runner.predict(windows[i % len(windows)])
    t = np.empty(n)
    for i in range(n):
        w = windows[i % len(windows)]
        t0 = time.perf_counter()
        runner.predict(w)
        t[i] = time.perf_counter() - t0
    t *= 1e3
    return float(np.percentile(t, 50)), float(np.percentile(t, 99)), float(t.mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="training run directory (default: train a small ALANet on synthetic data)")
    ap.add_argument("--invokes", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3, help="epochs for the default run")
    ap.add_argument("--routes", default="unrolled,loop,fused")
    args = ap.parse_args(argv)

    run = args.run or make_run(TMP, args.epochs)
    with np.load(run / "parity_windows.npz") as z:
        windows = z["test_x"].astype(np.float32)
    rows = []
    TMP.mkdir(parents=True, exist_ok=True)
    for route in args.routes.split(","):
        for quant in ("float32", "float16", "dynamic", "int8"):
            if route in ("loop", "fused") and quant == "int8":
                continue  # loop: crashes the TFLite calibrator; fused: int8 is slower (1.5 ms); both refused
            out = TMP / f"bundle-{route}-{quant}"  # kept: bench/compute_limit.py times them too
            res = convert_run(run, quant, out, route=route, force=True, min_agreement=0.0, quiet=True)
            b = load_bundle(out)
            runner = ModelRunner.from_bundle(b, num_threads=1)
            p50, p99, mean = time_runner(runner, windows, args.invokes)
            p = res.parity
            row = {"route": route, "quantization": quant, "bytes": res.model_bytes, "p50_ms": round(p50, 4),
                   "p99_ms": round(p99, 4), "mean_ms": round(mean, 4), "agreement": p.agreement,
                   "max_abs_diff": p.max_abs_diff, "macro_f1_keras": p.macro_f1_keras,
                   "macro_f1_tflite": p.macro_f1_tflite, "n_windows": p.n_windows, "convert_s": round(res.seconds, 1)}
            rows.append(row)
            print(f"{route:9s} {quant:8s} {row['bytes'] / 1024:8.1f} KiB  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  "
                  f"agreement {p.agreement:6.1%}  macro F1 Keras {p.macro_f1_keras:.3f} / TFLite "
                  f"{p.macro_f1_tflite:.3f}", flush=True)
    cfg = json.loads((run / "config.json").read_text())
    result = {
        "benchmark": "convert_latency",
        "run": {"dir": str(run), "model": cfg.get("model"), "task": cfg.get("task"), "window": cfg.get("window"),
                "channels": len(cfg["schema"]["channels"]), "hparams": cfg.get("hparams")},
        "invokes": args.invokes, "threads": 1,
        "platform": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count(),
                     "processor": platform.processor() or platform.machine()},
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
