"""Run every benchmark, collect the figures, compare with the platform's reference.

    python -m bench [--quick] [--only NAME[,NAME...]] [--list] [--write-reference]
    bench/run  (the same, with the repository's virtual environment)

Each benchmark is its own script with its own command line (``bench/<name>.py``),
run here as a subprocess with a time limit; its JSON result (kept in ``bench/results/last/``)
is read back and turned into figures (value, unit, how it was measured). A benchmark that is missing, fails
or times out is recorded as such and the run goes on. Writes
``bench/results/<platform>.json`` and ``bench/results/<platform>.md`` and prints the
ratio of every figure to ``bench/reference/<platform>.json`` when one exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import BENCH, REFERENCE, RESULTS, Figure, bench_env, fmt, machine_info, platform_name  # noqa: E402

Adapter = Callable[[dict[str, Any]], list[Figure]]


@dataclass(frozen=True)
class Bench:
    """One benchmark script: how to run it (full / quick) and where its JSON lands."""

    name: str
    script: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    result: str  # file name under bench/results
    adapter: Adapter | None = None  # None: the result carries its own "figures"
    timeout_s: int = 300
    default: bool = True  # part of a plain `python -m bench`
    what: str = ""
    prepare: Callable[[bool], list[str]] | None = None  # run first; returns extra arguments
    has_out: bool = True  # the script takes --out PATH (else it writes bench/results/<result> itself)


TRAIN_DATA = RESULTS / "tmp" / "train_speed_data"


def _train_data(quick: bool) -> list[str]:
    """A small synthetic EmoPain-format cohort (4 patients + 2 controls, 90 s each), made once."""
    if not any(TRAIN_DATA.glob("*.mat")):
        r = subprocess.run([sys.executable, "-m", "alanet", "data", "synth", "--out", str(TRAIN_DATA), "--patients",
                            "4", "--controls", "2", "--duration", "90", "--force"], capture_output=True, text=True,
                           env=bench_env(), cwd=BENCH.parent, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"alanet data synth failed: {(r.stderr.strip().splitlines() or [''])[-1]}")
    return ["--data", str(TRAIN_DATA)]


# ---------------------------------------------------------------- adapters for the area scripts
def _bridge(d: dict) -> list[Figure]:
    how = f"Decoder.feed on {d.get('frames')} encoded frames in {d.get('chunk_bytes')}-byte reads, 1 CPU, best of 3"
    return [
        Figure("decode.frames_per_s", "Decoder: binary frames/s", d.get("decode_frames_per_s"), "frames/s",
               f"{how}; {d.get('decode_path', 'one packet at a time')}", "higher"),
        Figure("decode.frames_per_cpu_s", "Decoder: binary frames per CPU second", d.get("decode_frames_per_cpu_s"),
               "frames/s", how.replace("best of 3", "process CPU time, best of 5"), "higher"),
        Figure("decode.reference_frames_per_s", "Decoder, reference path (one packet at a time, pure Python): "
               "binary frames/s", d.get("reference_decode_frames_per_s"), "frames/s",
               how.replace("Decoder.feed", "Decoder(batch=False).feed") + ", same run", "higher"),
        Figure("decode.csv_frames_per_s", "Decoder: CSV frames/s", d.get("csv_decode_frames_per_s"), "frames/s",
               how.replace("Decoder", "CsvDecoder"), "higher"),
        Figure("decode.realtime_factor", "Decoder: × one 60 Hz wearable", d.get("realtime_factor_60hz"), "×",
               "binary frames/s ÷ 60", "higher"),
    ]


def _convert(d: dict) -> list[Figure]:
    figs = []
    inv = d.get("invokes")
    run = d.get("run", {})
    for r in d.get("rows", []):
        tag = f"{r['route']}-{r['quantization']}"
        how = (f"ModelRunner.predict, LiteRT 1 thread, {inv} invokes on held-out windows; {run.get('model')} "
               f"units={run.get('hparams', {}).get('units')}, window {run.get('window')}×{run.get('channels')}")
        figs += [
            Figure(f"litert.{tag}.p50_ms", f"LiteRT latency per window p50, {tag}", r.get("p50_ms"), "ms", how),
            Figure(f"litert.{tag}.p99_ms", f"LiteRT latency per window p99, {tag}", r.get("p99_ms"), "ms", how),
            Figure(f"bundle.{tag}.kib", f"Model size, {tag}", round(r["bytes"] / 1024, 1) if r.get("bytes") else None,
                   "KiB", "model.tflite bytes", "lower"),
            Figure(f"litert.{tag}.agreement", f"Argmax agreement with Keras, {tag}", r.get("agreement"), "",
                   f"parity check on {r.get('n_windows')} held-out windows", "higher"),
        ]
    return figs


def _train(d: dict) -> list[Figure]:
    res = d.get("results", {})
    w = d.get("windows", {})
    how = (f"same windows for every model (fit {w.get('fit')}, test {w.get('test')}), {d.get('epochs')} epochs "
           f"(ALANet autoencoder {d.get('ae_epochs')}), early stopping, Keras on CPU")
    figs = [Figure("train.banet_over_alanet", "Training time BANet ÷ ALANet", d.get("banet_over_alanet_time"), "×",
                   how, "")]
    if "alanet" in res and "stacked-lstm" in res and res["alanet"].get("train_seconds"):
        figs.append(Figure("train.stacked_over_alanet", "Training time Stacked-LSTM ÷ ALANet",
                           round(res["stacked-lstm"]["train_seconds"] / res["alanet"]["train_seconds"], 2), "×", how, ""))
    for name, r in res.items():
        figs.append(Figure(f"train.{name}.seconds", f"Training time, {name}", r.get("train_seconds"), "s",
                           f"{how}; {r.get('epochs_run')} epochs run, {r.get('windows_per_second')} windows/s"))
        figs.append(Figure(f"train.{name}.macro_f1", f"Macro F1 (held-out participants), {name}", r.get("macro_f1"),
                           "", "synthetic EmoPain-format data, protective task", "higher"))
    return figs


def _runtime(d: dict) -> list[Figure]:
    e, c = d.get("end_to_end", {}), d.get("capacity", {})
    b = d.get("bundle", {})
    how = (f"real `alanet run` process, pty wearable paced at {e.get('speed')}× real time, embedded Mosquitto, "
           f"QoS 1 subscriber; {e.get('session_s')} s session; bundle {b.get('model_id')} (decision flipping at 0.5)")
    wl, al, rss = e.get("window_latency_ms", {}), e.get("alert_latency_ms", {}), e.get("rss_mb", {})
    return [
        Figure("e2e.alert_p50_ms", "End-to-end alert latency p50", al.get("p50"), "ms",
               how + "; last frame of the window written → alert received"),
        Figure("e2e.alert_p99_ms", "End-to-end alert latency p99", al.get("p99"), "ms", how + f"; n={al.get('n')}"),
        Figure("e2e.window_p50_ms", "End-to-end window latency p50", wl.get("p50"), "ms",
               how + "; last frame written → state message received"),
        Figure("e2e.window_p99_ms", "End-to-end window latency p99", wl.get("p99"), "ms", how + f"; n={wl.get('n')}"),
        Figure("runtime.startup_s", "Gateway start-up time", e.get("startup_s"), "s",
               "process spawn → retained `online` status at a subscriber (bundle verified, self-test run)"),
        Figure("runtime.rss_peak_mb", "Gateway RSS (peak)", rss.get("peak"), "MB", "VmHWM of the `alanet run` process "
               "after the session"),
        Figure("runtime.cpu_wearables_per_core", "Wearables per core by CPU time (no latency bound)",
               c.get("wearables_per_core_60hz"), "wearables", f"{c.get('wearers')} wearers in-process, CPU seconds per "
               "stream second", "higher"),
    ]


def _bundles(_: dict) -> list[Figure]:
    figs = []
    for man in sorted((BENCH.parent / "models").glob("*/manifest.json")):
        m = json.loads(man.read_text())
        model = man.parent / m.get("model_file", "model.tflite")
        if model.is_file():
            figs.append(Figure(f"bundle.shipped.{man.parent.name}.kib", f"Shipped bundle {man.parent.name} "
                               f"({m.get('quantization')}) model size", round(model.stat().st_size / 1024, 1), "KiB",
                               "models/<name>/model.tflite bytes", "lower"))
            from alanet.device.bundle import transfer_size

            sent = transfer_size(man.parent)
            figs.append(Figure(f"bundle.shipped.{man.parent.name}.transfer_kib", f"Shipped bundle {man.parent.name} "
                               "as sent (xz archive)", round(sent / 1024, 1), "KiB",
                               "alanet.device.bundle.pack of models/<name>: what alanet flash sends (budget 64 KiB)",
                               "lower"))
    return figs


BENCHES: list[Bench] = [
    Bench("bridge_decode", "bridge_decode.py", (), ("--frames", "20000"), "bridge_decode.json", _bridge, 120,
          what="wire-protocol decoder frames/s", has_out=False),
    Bench("convert_latency", "convert_latency.py", ("--routes", "unrolled,loop", "--invokes", "2000"),
          ("--routes", "loop", "--invokes", "300", "--epochs", "1"), "convert_latency.json", _convert, 480,
          what="TFLite size, LiteRT latency and parity per quantisation", has_out=False),
    Bench("compute_limit", "compute_limit.py", (), ("--quick",), "compute_limit.json", None, 120,
          what="model FLOPs, single-core matmul rate, distance of LiteRT from the floor"),
    Bench("batch_cost", "batch_cost.py", (), ("--rounds", "5", "--routes", "fused,unrolled"), "batch_cost.json", None,
          900, what="LiteRT cost per window against batch size per conversion route, with the compute floor"),
    Bench("train_speed", "train_speed.py", ("--epochs", "2", "--ae-epochs", "2"),
          ("--epochs", "1", "--ae-epochs", "1"), "train_speed.json", _train, 420,
          what="training time and macro F1: ALANet vs BANet vs Stacked-LSTM (small synthetic cohort)",
          prepare=_train_data),
    Bench("runtime_latency", "runtime_latency.py", ("--seconds", "90", "--speed", "4", "--wearers", "20"),
          ("--seconds", "60", "--speed", "6", "--wearers", "10"), "runtime.json", _runtime, 240,
          what="end-to-end latency, RSS, start-up"),
    Bench("hotpath", "hotpath.py", ("--profile",), ("--quick", "--profile"), "hotpath.json", None, 120,
          what="per-stage time per window: decode, features, window, invoke, publish"),
    Bench("capacity", "capacity.py", (), ("--quick",), "capacity.json", None, 240,
          what="60 Hz wearables per core with p99 < 100 ms and no frame dropped"),
    Bench("capacity_curve", "capacity.py", ("--curve", "--compare"), ("--curve", "1,16,100,500", "--seconds", "4"),
          "capacity_curve.json", None, 900, default=False,
          what="capacity as a curve, batched and not: CPU per wearer, alert p99, frames dropped (plot in docs/)"),
    Bench("main_loop", "main_loop.py", (), ("--wearers", "1,16", "--seconds", "6"), "main_loop.json", None, 300,
          what="the real Gateway.run with pty wearables: main-loop CPU per window, model vs runtime's own work"),
    Bench("mqtt_throughput", "mqtt_throughput.py", (), ("--quick",), "mqtt_throughput.json", None, 120,
          what="alerts/s through the durable queue, QoS 1"),
    Bench("fleet", "fleet.py", (), ("--quick", "--gateways", "10,100"), "fleet.json", None, 480,
          what="N gateways → one central broker → one subscriber: alerts/s, latency, saturation"),
    Bench("faults", "faults.py", (), ("--quick",), "faults.json", None, 600,
          what="fault matrix: alerts lost / duplicated, time to recover"),
    Bench("command_fuzz", "command_fuzz.py", (), ("--quick",), "command_fuzz.json", None, 300,
          what="hostile MQTT command messages to the running gateway: RSS peak ÷ idle, still classifying"),
    Bench("gateway_fuzz", "gateway_fuzz.py", ("--streams", "1000000"), ("--quick",), "gateway_fuzz.json", None, 5400,
          default=False, what="1,000,000 hostile wearable streams through the whole gateway path (long)"),
    Bench("synth_calibration", "synth_calibration.py", (), (), "synth_calibration.json", None, 300, default=False,
          what="difficulty of the synthetic data for classic classifiers (not in the default run)"),
    Bench("rule_frontier", "rule_frontier.py", (), ("--seeds", "101,102", "--duration", "120"), "rule_frontier.json",
          None, 600, default=False,
          what="protective bundle on synthetic streams: best hit rate any alert rule reaches per false-alarm budget"),
    Bench("real_data", "real_data.py", (), ("--sets", "basicmotions", "--models", "alanet,knn,rf"), "real_data.json",
          None, 3600, default=False,
          what="every model on public real recordings (UEA sets from a PyPI wheel; not in the default run)"),
]


@dataclass
class Outcome:
    name: str
    status: str  # ok, failed, timeout, missing
    seconds: float
    figures: list[Figure] = field(default_factory=list)
    error: str = ""
    log: str = ""


LAST = RESULTS / "last"  # every benchmark's own JSON of the last run


def run_one(b: Bench, quick: bool, logs: Path) -> Outcome:
    """Run one benchmark; its JSON goes to bench/results/last/ (files under bench/results/ stay as they were)."""
    script = BENCH / b.script
    if not script.is_file():
        return Outcome(b.name, "missing", 0.0, error=f"bench/{b.script} does not exist")
    LAST.mkdir(parents=True, exist_ok=True)
    result = LAST / b.result
    if result.exists():
        result.unlink()
    fixed = RESULTS / b.result  # where a script without --out writes
    saved = fixed.read_bytes() if not b.has_out and fixed.is_file() else None
    try:
        return _run(b, quick, logs, script, result, fixed)
    finally:
        if saved is not None:  # keep the committed per-area result; the fresh one is in last/
            fixed.write_bytes(saved)


def _run(b: Bench, quick: bool, logs: Path, script: Path, result: Path, fixed: Path) -> Outcome:
    args = list(b.quick_args if quick else b.args)
    if b.has_out:
        args += ["--out", str(result)]
    t0 = time.monotonic()
    if b.prepare is not None:
        try:
            args += b.prepare(quick)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            return Outcome(b.name, "failed", time.monotonic() - t0, error=f"preparing: {exc}")
    cmd = [sys.executable, str(script), *args]
    log = logs / f"{b.name}.log"
    start_wall = time.time()
    try:
        with open(log, "w") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=BENCH.parent, env=bench_env(),
                               timeout=b.timeout_s)
        rc = r.returncode
        if not b.has_out and fixed.is_file() and fixed.stat().st_mtime >= start_wall - 1:
            shutil.copyfile(fixed, result)
    except subprocess.TimeoutExpired:
        return Outcome(b.name, "timeout", time.monotonic() - t0, error=f"ran over {b.timeout_s} s", log=str(log))
    dt = time.monotonic() - t0
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] or [""]
    if rc != 0:
        return Outcome(b.name, "failed", dt, error=f"exit {rc}: {tail[0][-300:]}", log=str(log))
    if not result.is_file() or result.stat().st_mtime < start_wall - 1:
        return Outcome(b.name, "failed", dt, error=f"no fresh {result.relative_to(BENCH.parent)}", log=str(log))
    try:
        data = json.loads(result.read_text())
        figs = b.adapter(data) if b.adapter else [Figure(**f) for f in data.get("figures", [])]
    except (ValueError, KeyError, TypeError) as exc:
        return Outcome(b.name, "failed", dt, error=f"unreadable result: {type(exc).__name__}: {exc}", log=str(log))
    return Outcome(b.name, "ok", dt, figures=figs, log=str(log))


WORSE_RATIO = 1.5  # a figure is flagged when more than 50 % worse than its reference ...
ABS_TOLERANCE = {"s": 1.0, "ms": 1.0, "µs": 1.0}  # ... and, for times, worse by more than this much


def compare(figures: list[dict], reference: dict | None) -> list[dict]:
    """Add ``ref`` and ``ratio`` (value / reference) and a ``flag`` when clearly worse.

    Clearly worse: past ``WORSE_RATIO`` in the direction that matters and, for times,
    by more than ``ABS_TOLERANCE`` (sub-second start-up and recovery times move by
    2× with the machine's other load; that is noise, not a regression).
    """
    refs = {f["key"]: f for f in (reference or {}).get("figures", [])}
    out = []
    for f in figures:
        f = dict(f)
        r = refs.get(f["key"])
        v, rv = f.get("value"), (r or {}).get("value")
        if isinstance(v, (int, float)) and isinstance(rv, (int, float)) and not isinstance(v, bool) and rv:
            ratio = v / rv
            f["ref"], f["ratio"] = rv, round(ratio, 3)
            worse = (ratio > WORSE_RATIO) if f.get("better") == "lower" else \
                (ratio < 1 / WORSE_RATIO) if f.get("better") == "higher" else False
            if worse and abs(v - rv) <= ABS_TOLERANCE.get(f.get("unit", ""), 0.0):
                worse = False
            f["flag"] = "worse" if worse else ""
        elif r is not None:
            f["ref"] = rv
            f["flag"] = "" if v == rv else "changed"
        out.append(f)
    return out


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [f"# Benchmark results: {doc['platform']}", "",
             f"{m['cpu']}, {m['cpus']} CPUs, Python {m['python']}, {m['os']}; load average at start "
             f"{doc.get('load_average_start')}; {doc['date_utc']}; "
             f"{'quick run (--quick)' if doc['quick'] else 'full run'}; {doc['seconds']:.0f} s in all.", "",
             "| figure | value | reference | how measured |", "|---|---|---|---|"]
    for f in doc["figures"]:
        val = f"{fmt(f['value'])} {f['unit']}".strip()
        ref = ""
        if "ref" in f:
            ref = f"{fmt(f['ref'])}" + (f" (×{f['ratio']:.2f})" if "ratio" in f else "") + (
                f" **{f['flag']}**" if f.get("flag") else "")
        how = str(f["how"]).replace("|", "\\|")
        lines.append(f"| {f['label']} | {val} | {ref} | {how} |")
    lines += ["", "| benchmark | status | seconds | note |", "|---|---|---|---|"]
    for name, b in doc["benchmarks"].items():
        lines.append(f"| {name} | {b['status']} | {b['seconds']:.0f} | {b.get('error', '').replace('|', '/')} |")
    if doc.get("merged"):
        lines.append("")
        lines.append("Some rows come from an earlier run (merged with `--merge`); the seconds column is per benchmark.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs of every benchmark (a few minutes)")
    ap.add_argument("--only", help="comma-separated benchmark names (see --list)")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other benchmarks' figures from the last results file (with --only)")
    ap.add_argument("--write-reference", action="store_true",
                    help=f"also save the results as bench/reference/{platform_name()}.json/.md")
    args = ap.parse_args(argv)
    by_name = {b.name: b for b in BENCHES}
    if args.list:
        for b in BENCHES:
            print(f"{b.name:18s} {'' if b.default else '(opt-in) '}{b.what}")
        return 0
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        bad = [n for n in names if n not in by_name]
        if bad:
            ap.error(f"unknown benchmark(s): {', '.join(bad)} (known: {', '.join(by_name)})")
        todo = [by_name[n] for n in names]
    else:
        todo = [b for b in BENCHES if b.default]
    plat = platform_name()
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    t0 = time.monotonic()
    outcomes: dict[str, Outcome] = {}
    print(f"benchmarks on {plat} ({info['cpu']}, {info['cpus']} CPUs){' --quick' if args.quick else ''}: "
          f"{', '.join(b.name for b in todo)}", flush=True)
    for b in todo:
        print(f"[{time.monotonic() - t0:5.0f} s] {b.name} ...", flush=True)
        o = run_one(b, args.quick, logs)
        outcomes[b.name] = o
        print(f"[{time.monotonic() - t0:5.0f} s] {b.name}: {o.status} in {o.seconds:.0f} s"
              f"{'  ' + o.error if o.error else ''}", flush=True)
    figures = [{**f.as_dict(), "bench": o.name} for o in outcomes.values() for f in o.figures]
    figures += [{**f.as_dict(), "bench": "bundles"} for f in _bundles({})]
    out_json = RESULTS / f"{plat}.json"
    benchmarks = {n: {"status": o.status, "seconds": round(o.seconds, 1), "error": o.error,
                      "log": os.path.relpath(o.log, BENCH.parent) if o.log else ""} for n, o in outcomes.items()}
    if args.merge and out_json.is_file():  # keep the other benchmarks of the last run
        old = json.loads(out_json.read_text())
        kept = {n: b for n, b in old.get("benchmarks", {}).items() if n not in outcomes}
        benchmarks = {**kept, **benchmarks}
        figures = [f for f in old.get("figures", []) if f.get("bench") in kept] + figures
        order = {b.name: i for i, b in enumerate(BENCHES)}
        figures.sort(key=lambda f: order.get(f.get("bench"), len(order)))
    figures = [{k: v for k, v in f.items() if k not in ("ref", "ratio", "flag")} for f in figures]
    ref_path = REFERENCE / f"{plat}.json"
    reference = json.loads(ref_path.read_text()) if ref_path.is_file() else None
    figures = compare(figures, reference)
    doc = {"platform": plat, "machine": info, "quick": args.quick, "date_utc": info["date_utc"],
           "load_average_start": info["load_average_1m"], "seconds": round(time.monotonic() - t0, 1),
           "reference": str(ref_path.relative_to(BENCH.parent)) if reference else None, "merged": bool(args.merge),
           "benchmarks": benchmarks, "figures": figures}
    if args.merge:
        doc["seconds"] = round(sum(b["seconds"] for b in benchmarks.values()), 1)
    out_md = RESULTS / f"{plat}.md"
    out_json.write_text(json.dumps(doc, indent=1) + "\n")
    out_md.write_text(markdown(doc))
    print()
    print(f"{'figure':58s} {'value':>14s} {'reference':>12s} {'ratio':>7s}")
    for f in figures:
        val = f"{fmt(f['value'])} {f['unit']}".strip()
        ref = fmt(f["ref"]) if "ref" in f else "-"
        ratio = f"{f['ratio']:.2f}" if "ratio" in f else ""
        print(f"{f['label'][:58]:58s} {val:>14s} {ref:>12s} {ratio:>7s} {f.get('flag', '')}")
    bad = {n: b for n, b in benchmarks.items() if b["status"] != "ok"}
    for n, b in bad.items():
        print(f"{n}: {b['status'].upper()}: {b['error']} (log: {b['log'] or '-'})")
    worse = [f["label"] for f in figures if f.get("flag") == "worse"]
    if reference is None:
        print(f"no reference for {plat} (bench/reference/{plat}.json); --write-reference saves this run as one")
    elif worse:
        print(f"{len(worse)} figure(s) clearly worse than the reference (> {WORSE_RATIO:g}×): {', '.join(worse)}")
    print(f"wrote {out_json.relative_to(BENCH.parent)} and {out_md.relative_to(BENCH.parent)} "
          f"({doc['seconds']:.0f} s)")
    if args.write_reference:
        REFERENCE.mkdir(parents=True, exist_ok=True)
        clean = {**doc, "reference": None,
                 "figures": [{k: v for k, v in f.items() if k not in ("ref", "ratio", "flag")} for f in figures]}
        (REFERENCE / f"{plat}.json").write_text(json.dumps(clean, indent=1) + "\n")
        (REFERENCE / f"{plat}.md").write_text(markdown(clean))
        print(f"saved as the reference: bench/reference/{plat}.json and .md")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
