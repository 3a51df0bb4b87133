"""Benchmark: LiteRT cost per window against batch size, per conversion route, with the compute floor.

    .venv/bin/python bench/batch_cost.py [--run RUN_DIR] [--routes fused,loop,unrolled] [--sizes 1,4,16,64]
                                         [--quantize float16] [--rounds 5]

One trained run is converted by ``alanet convert --route R --batch-sizes 1,4,16,64`` for
each route (``fused``: one fused-LSTM file per size; ``loop``: one WHILE-loop file per
size; ``unrolled``: one file with a dynamic batch). Each native size is then timed with
the gateway's ``ModelRunner.predict_at`` (one thread, the process pinned to one CPU):
``rounds`` rounds, each measuring the single-core sgemm rate and then every route and
size in turn (so load changes hit all of them alike), every invoke timed alone. On a
shared machine the fastest invoke is the figure (the undisturbed cost: the time a
core that is the gateway's own would take), the median invoke is recorded next to
it; the rate likewise is the best round's. The compute floor is
the model's FLOPs per window (counted from the batch-1 TFLite graph,
:func:`bench.compute_limit.count_flops`) over the best sgemm rate of the same run.
Agreement with Keras is the conversion's parity check, per batch size.
Prints a table and writes ``bench/results/batch_cost.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, Figure, pin_one_core, write_result  # noqa: E402
from bench.compute_limit import _blas_one_thread, count_flops, matmul_rate  # noqa: E402

TMP = RESULTS / "tmp" / "batch_cost"


def convert_routes(run: Path, routes: list[str], sizes: tuple[int, ...], quant: str) -> dict[str, Path]:
    """One bundle per route at ``sizes`` (kept in bench/results/tmp/batch_cost for reuse, keyed by the
    trained model and the converter's source, so a changed converter converts again)."""
    import hashlib

    import alanet.convert as conv
    from alanet.convert.convert import convert_run

    h = hashlib.sha256((run / "model.keras").read_bytes())
    for src in sorted(Path(conv.__file__).parent.glob("*.py")):
        h.update(src.read_bytes())
    key = h.hexdigest()[:12]
    out = {}
    for route in routes:
        b = TMP / f"bundle-{key}-{route}-{quant}-{'-'.join(map(str, sizes))}"
        if not (b / "manifest.json").is_file():
            t0 = time.monotonic()
            convert_run(run, quant, b, route=route, force=True, min_agreement=0.0, quiet=True, batch_sizes=sizes)
            print(f"converted {route}: {time.monotonic() - t0:.0f} s", flush=True)
        out[route] = b
    return out


def time_sizes(runners: dict[str, object], windows: np.ndarray, rounds: int, per_round: int) -> tuple[dict, list]:
    """({route: {size: [ms per window, one per invoke]}}, [sgemm FLOP/s, one per round]): every route and size
    visited once per round, after that round's sgemm rate."""
    res: dict[str, dict[int, list[float]]] = {r: {s: [] for s in rn.batch_sizes} for r, rn in runners.items()}
    rates = []
    for rn in runners.values():  # warm-up
        for s in rn.batch_sizes:
            for _ in range(3):
                rn.predict_at(s, windows[:s])
    for _ in range(rounds):
        rates.append(matmul_rate(512, 512, 512, 0.15))
        for route, rn in runners.items():
            for s in rn.batch_sizes:
                n = max(3, per_round // s)
                x = windows[:s]
                for _ in range(n):
                    t0 = time.perf_counter()
                    rn.predict_at(s, x)
                    res[route][s].append(1e3 * (time.perf_counter() - t0) / s)
    return res, rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="training run (default: the small ALANet run of bench/convert_latency.py)")
    ap.add_argument("--routes", default="fused,loop,unrolled")
    ap.add_argument("--sizes", default="1,4,16,64")
    ap.add_argument("--quantize", default="float16")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=128, help="windows per size per round")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import json

    from alanet.device.bundle import load_bundle
    from alanet.device.inference import ModelRunner

    if args.run is None:
        from bench.convert_latency import TMP as CL_TMP, make_run

        args.run = make_run(CL_TMP, 3)
    sizes = tuple(sorted({1, *(int(s) for s in args.sizes.split(","))}))
    routes = [r for r in args.routes.split(",") if r]
    bundles = convert_routes(args.run, routes, sizes, args.quantize)
    cpu = pin_one_core()
    _blas_one_thread()
    runners = {r: ModelRunner.from_bundle(load_bundle(b, run_self_test=False), num_threads=1) for r, b in bundles.items()}
    with np.load(args.run / "parity_windows.npz") as z:
        x = z["test_x"].astype(np.float32)
    windows = x[np.arange(max(sizes)) % len(x)]
    times, rates = time_sizes(runners, windows, args.rounds, args.per_round)
    peak = max(rates)
    rows = []
    figs = [Figure("batch.sgemm_gflops", "Single-core float32 sgemm 512³ (same run)", round(peak / 1e9, 2), "GFLOP/s",
                   f"numpy, BLAS 1 thread, pinned; best of {args.rounds} rounds between the timings", "higher")]
    for route, b in bundles.items():
        m = json.loads((b / "manifest.json").read_text())
        files = {1: m["model_bytes"], **{e["size"]: e["bytes"] for e in m.get("batch_models") or []}}
        gc = count_flops((b / "model.tflite").read_bytes(), int(m["window"]))
        floor = 1e3 * gc.flops / peak
        agreement = {1: m["parity"]["agreement"], **{int(k): v["agreement"]
                                                     for k, v in (m["parity"].get("batch") or {}).items()}}
        for s in sizes:
            t = times[route][s]
            med, best = float(np.median(t)), float(min(t))
            row = {"route": route, "batch": s, "file": "model.tflite" if s == 1 else
                   next(e["file"] for e in m["batch_models"] if e["size"] == s),
                   "file_bytes": files[s] if not (route == "unrolled" and s > 1) else m["model_bytes"],
                   "ms_per_window": round(best, 4), "ms_per_window_median": round(med, 4),
                   "floor_ms": round(floor, 5), "x_floor": round(best / floor, 2),
                   "agreement": agreement.get(s), "mflops_per_window": round(gc.flops / 1e6, 3)}
            rows.append(row)
            print(f"{route:9s} batch {s:3d}  {row['file_bytes'] / 1024:7.1f} KiB  {best:7.4f} ms/window "
                  f"(median {med:.4f})  {row['x_floor']:6.1f}x floor {floor:.4f} ms  agreement "
                  f"{row['agreement']:.1%}", flush=True)
            figs.append(Figure(f"batch.{route}.b{s}.ms", f"LiteRT ms per window, {route}, batch {s}", row["ms_per_window"],
                               "ms", f"fastest invoke ÷ batch, {args.rounds} rounds, 1 thread, {args.quantize}", "lower"))
            figs.append(Figure(f"batch.{route}.b{s}.x_floor", f"Cost per window / compute floor, {route}, batch {s}",
                               row["x_floor"], "×", f"floor {floor:.4f} ms = {gc.flops / 1e6:.2f} MFLOP / sgemm peak",
                               "lower"))
    print(f"single-core float32 sgemm 512^3: best {peak / 1e9:.1f} GFLOP/s, median {np.median(rates) / 1e9:.1f} "
          f"(cpu {cpu}); load average {os.getloadavg()[0]:.1f}")
    path = write_result("batch_cost", {"run": str(args.run), "quantization": args.quantize, "sizes": list(sizes),
                                       "rounds": args.rounds, "sgemm_gflops": round(peak / 1e9, 2),
                                       "sgemm_gflops_rounds": [round(r / 1e9, 2) for r in rates], "cpu": cpu,
                                       "bundle_bytes": {r: sum(e["bytes"] for e in json.loads(
                                           (b / "manifest.json").read_text()).get("batch_models") or []
                                           if e["file"] != "model.tflite") + json.loads(
                                           (b / "manifest.json").read_text())["model_bytes"] for r, b in bundles.items()},
                                       "rows": rows}, figs, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
