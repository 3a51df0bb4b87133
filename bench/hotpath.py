"""Where a window's time goes in the gateway: decode, features, window, invoke, decide, publish.

    python bench/hotpath.py [--bundle DIR] [--seconds 120] [--profile]

Streams one wearer's session (the wire bytes, one serial read per frame) through an
in-process ``Gateway`` connected to a real Mosquitto, pinned to one CPU, and times
each stage on the real objects:

- decode: ``Decoder.feed`` per frame;
- features + window: ``StreamingFeatures.push`` and ``RingWindow.push`` per frame;
- pipeline glue: the rest of ``WearerPipeline.handle`` per frame (sequence checks,
  the normalisation and decision per window), i.e. handle() minus its parts;
- invoke: ``ModelRunner.predict`` per window (LiteRT, one thread);
- publish: the state JSON and paho publish per window (``Gateway._on_window``);
- total: ``Gateway.process`` for the whole stream, per window.

Everything but invoke, per window (45 frames' per-frame work plus the per-window
work), is compared with invoke: the target is runtime < model. The runtime's own work
is also measured A/B in the same run: the one-packet-at-a-time reference decoder and
per-frame pipeline against the batch decoder and block pipeline, for 1, 4, 15 and 45
frames per serial read. ``--profile`` adds a
cProfile of ``Gateway.process`` (top functions by own time). Writes
``bench/results/hotpath.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import pstats
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, Figure, pin_one_core, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
import runtime_support as rs  # noqa: E402
from bench.capacity import default_bundle, encoded_session  # noqa: E402


def best_of(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def make_gateway(bundle: Path, broker_url: str, work: Path, publish_state: bool = True):
    from alanet.device.config import WearableConfig, load_config
    from alanet.device.runtime import Gateway

    tag = f"hot{time.monotonic_ns()}"  # own client id: gateways sharing one would kick each other off the broker
    cfg = load_config(None, {"port": "/dev/null", "bundle": str(bundle), "broker": broker_url, "gateway": tag,
                             "state_dir": str(work / tag)})
    cfg = replace(cfg, wearables=(WearableConfig("w1", "/dev/null"),), publish_state=publish_state)
    gw = Gateway(cfg)
    gw.link.start()
    gw.link.wait_connected(10)
    return gw


def close_gateway(gw) -> None:
    gw.link.stop(gw.status_topic, b"{}")
    gw.queue.close()
    gw._lock.release()


def stages(bundle: Path, sess: rs.Session, frames: list[bytes], broker_url: str, work: Path) -> dict:
    from alanet.device.features import StreamingFeatures
    from alanet.device.pipeline import WearerPipeline
    from alanet.device.windowing import RingWindow
    from alanet.firmware_bridge.codec import Decoder

    n = len(frames)
    gw = make_gateway(bundle, broker_url, work)
    spec = gw.spec
    n_win = (n - spec.length) // spec.stride + 1

    def decode_all() -> list:
        d = Decoder()
        return [d.feed(f) for f in frames]

    t_decode = best_of(decode_all)
    packets = decode_all()
    from alanet.firmware_bridge.protocol import Frame

    flat = [p for ps in packets for p in ps if type(p) is Frame]
    angles = [f.angles for f in flat]
    emg = [f.emg for f in flat]

    def feats() -> list:
        s = StreamingFeatures(spec.sample_rate_hz)
        return [s.push(a, e) for a, e in zip(angles, emg)]

    t_feat = best_of(feats)
    rows = feats()

    def ring() -> None:
        r = RingWindow(spec.n_channels, spec.length, spec.stride)
        for x in rows:
            r.push(x)

    t_ring = best_of(ring)
    wins, _ = rs.session_windows(sess, spec.normalizer)
    wins = wins[:n_win]
    t_invoke = best_of(lambda: [spec.predict(w) for w in wins])

    def handle(predict) -> None:
        p = WearerPipeline("w1", replace(spec, predict=predict))
        for ps in packets:
            p.handle(ps)

    const = np.array([0.5, 0.5], np.float32)
    t_handle_noinvoke = best_of(lambda: handle(lambda w: const))
    # publish: the runtime's per-window action on real results
    p = WearerPipeline("w1", spec)
    results = [r for ps in packets for r in p.handle(ps)]
    t_publish = best_of(lambda: [gw._on_window(0, r) for r in results]) if results else 0.0
    gw.link.poll()

    def process_all() -> None:
        g = make_gateway(bundle, broker_url, work)
        t = time.perf_counter()
        for f in frames:
            g.process(0, f)
        process_all.t = min(getattr(process_all, "t", float("inf")), time.perf_counter() - t)
        close_gateway(g)

    for _ in range(3):
        process_all()
    t_total = process_all.t
    close_gateway(gw)
    per_frame_us = lambda t: round(1e6 * t / n, 3)  # noqa: E731
    per_win_ms = lambda t: round(1e3 * t / n_win, 4)  # noqa: E731
    glue = max(t_handle_noinvoke - t_feat - t_ring, 0.0)
    return {
        "frames": n, "windows": n_win, "alerts_in_stream": sum(1 for r in results if r.event),
        "per_frame_us": {"decode": per_frame_us(t_decode), "features": per_frame_us(t_feat),
                         "window": per_frame_us(t_ring), "pipeline_glue": per_frame_us(glue)},
        "per_window_ms": {"decode": per_win_ms(t_decode), "features": per_win_ms(t_feat), "window": per_win_ms(t_ring),
                          "pipeline_glue_and_decision": per_win_ms(glue), "invoke": per_win_ms(t_invoke),
                          "publish": per_win_ms(t_publish), "total_process": per_win_ms(t_total)},
        # the runtime's own work: the sum of the measured stages (robust); total − invoke as a cross-check
        "runtime_ms_per_window": per_win_ms(t_decode + t_feat + t_ring + glue + t_publish),
        "total_minus_invoke_ms_per_window": per_win_ms(t_total - t_invoke),
        "invoke_ms_per_window": per_win_ms(t_invoke),
    }


READS = (1, 2, 4, 15, 45)  # frames per serial read in the A/B below


def runtime_work(spec, frames: list[bytes], reads=READS, repeat: int = 5) -> dict:
    """The runtime's own work per window (decode, checks, features, ring, normalise, glue: all but invoke).

    Same stream, same process, interleaved best-of-``repeat``: ``reference`` is the
    one-packet-at-a-time decoder (``Decoder(batch=False)``) and pipeline
    (``WearerPipeline(batch=False)``, the per-frame path); ``blocks`` is what the gateway
    runs: ``Decoder.feed_blocks`` and ``handle`` per read (frame rows, features and ring
    once per window). The model is replaced by a constant, so invoke is out.
    """
    from alanet.device.pipeline import WearerPipeline
    from alanet.firmware_bridge.codec import Decoder

    const = np.array([0.5, 0.5], np.float32)
    nospec = replace(spec, predict=lambda w: const, attention=None)  # no interpreter behind it: no attention read
    n_win = (len(frames) - spec.length) // spec.stride + 1

    def reference(chunks: list[bytes]) -> None:
        d, p = Decoder(batch=False), WearerPipeline("w1", nospec, batch=False)
        for c in chunks:
            for pkt in d.feed(c):
                p.handle([pkt])
        assert p.counters.windows == n_win

    def blocks(chunks: list[bytes]) -> None:
        d, p = Decoder(), WearerPipeline("w1", nospec)
        for c in chunks:
            p.handle(d.feed_blocks(c))
        assert p.counters.windows == n_win

    out, wall = {}, {}
    for r in reads:
        chunks = [b"".join(frames[k:k + r]) for k in range(0, len(frames), r)]
        best = {"reference": float("inf"), "blocks": float("inf")}
        best_wall = dict(best)
        for _ in range(repeat):
            for name, fn in (("reference", reference), ("blocks", blocks)):
                t, c = time.perf_counter(), time.process_time()
                fn(chunks)
                best[name] = min(best[name], time.process_time() - c)
                best_wall[name] = min(best_wall[name], time.perf_counter() - t)
        out[str(r)] = {k: round(1e3 * v / n_win, 4) for k, v in best.items()}
        out[str(r)]["speedup"] = round(best["reference"] / best["blocks"], 2)
        wall[str(r)] = {k: round(1e3 * v / n_win, 4) for k, v in best_wall.items()}
    # CPU time of this process (pinned to one core): the work itself, without the waits for the CPU that a
    # shared machine adds to the wall time (also reported)
    return {"frames_per_read": list(reads), "ms_per_window": out, "wall_ms_per_window": wall, "windows": n_win}


def profile(bundle: Path, frames: list[bytes], broker_url: str, work: Path, top: int = 25) -> dict:
    gw = make_gateway(bundle, broker_url, work)
    pr = cProfile.Profile()
    pr.enable()
    for f in frames:
        gw.process(0, f)
    pr.disable()
    close_gateway(gw)
    st = pstats.Stats(pr)
    total = st.total_tt
    groups = {"decode": ("firmware_bridge/codec", "firmware_bridge/cobs"), "features": ("device/features",),
              "window": ("device/windowing",), "invoke": ("interpreter", "device/inference"),
              "decide": ("device/decisions",), "pipeline": ("device/pipeline",),
              "publish": ("device/runtime", "device/mqtt_link", "paho", "json", "uuid", "datetime")}
    by_group: dict[str, float] = {k: 0.0 for k in groups}
    by_group["other (numpy, builtins)"] = 0.0
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, callers) in st.stats.items():
        if file == "~":  # built-ins: attribute by what they are
            g = ("invoke" if "Invoke" in fn or "litert" in fn else "alert queue (sqlite)" if "sqlite3" in fn
                 else "publish" if "socket" in fn or "select" in fn else "other (numpy, builtins)")
        else:
            g = next((k for k, pats in groups.items() if any(p in file for p in pats)), "other (numpy, builtins)")
        by_group[g] = by_group.get(g, 0.0) + tt
        rows.append((tt, ct, nc, f"{Path(file).name}:{line}({fn})"))
    rows.sort(reverse=True)
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
    return {"total_s": round(total, 4), "own_time_by_area_pct": {k: round(100 * v / total, 1) for k, v in
                                                                 sorted(by_group.items(), key=lambda kv: -kv[1])},
            "top": [{"own_s": round(tt, 4), "cum_s": round(ct, 4), "calls": nc, "function": name}
                    for tt, ct, nc, name in rows[:top]],
            "text": buf.getvalue()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--quick", action="store_true", help="60 s of stream")
    ap.add_argument("--profile", action="store_true", help="add a cProfile of Gateway.process")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    seconds = 60.0 if args.quick else args.seconds
    bundle = args.bundle or default_bundle()
    sess = rs.make_session(seed=3, duration_s=max(seconds, 60.0))
    frames = encoded_session(sess)[: int(seconds * rs.FS)]
    from alanet.device.broker import EmbeddedBroker

    with EmbeddedBroker(prefer="mosquitto") as broker, tempfile.TemporaryDirectory(prefix="alanet-hot-") as tmp:
        cpu = pin_one_core()
        st = stages(bundle, sess, frames, broker.url, Path(tmp))
        from alanet.device.bundle import load_bundle
        from alanet.device.inference import ModelRunner
        from alanet.device.pipeline import ModelSpec

        b = load_bundle(bundle)
        work_ab = runtime_work(ModelSpec.from_bundle(b, ModelRunner.from_bundle(b)), frames)
        prof = profile(bundle, frames, broker.url, Path(tmp)) if args.profile else None
    pw = st["per_window_ms"]
    print(f"bundle {bundle} (CPU {cpu}); per window ({st['windows']} windows, stride 45 frames):")
    for k, v in pw.items():
        print(f"  {k:28s} {v:8.4f} ms")
    print(f"  total − invoke               {st['total_minus_invoke_ms_per_window']:8.4f} ms")
    print(f"  runtime (sum of stages)      {st['runtime_ms_per_window']:8.4f} ms vs invoke {st['invoke_ms_per_window']:.4f} ms"
          f" -> ratio {st['runtime_ms_per_window'] / max(st['invoke_ms_per_window'], 1e-9):.2f}")
    print("runtime's own work per window (all but invoke; CPU time), reference path vs blocks, by frames per read:")
    for r, v in work_ab["ms_per_window"].items():
        print(f"  {r:>3} frames/read: {v['reference']:.4f} ms → {v['blocks']:.4f} ms ({v['speedup']}×)")
    if prof:
        print("own time by area (cProfile):", json.dumps(prof["own_time_by_area_pct"]))
    man = json.loads((bundle / "manifest.json").read_text())
    how = "in-process Gateway.process over one wearer's stream (1 read per frame), 1 CPU, best of 3"
    figs = [
        Figure("hotpath.runtime_ms_per_window", "Runtime's own work per window (all but invoke)",
               st["runtime_ms_per_window"], "ms", "sum of decode, features, window, pipeline glue + decision and "
               "publish, each timed on the real objects over one wearer's stream, 1 CPU, best of 5", "lower"),
        Figure("hotpath.invoke_ms_per_window", "Model invoke per window (in the pipeline)", st["invoke_ms_per_window"],
               "ms", "ModelRunner.predict on the session's windows, best of 5", "lower"),
        Figure("hotpath.decode_us_per_frame", "Decode per frame", st["per_frame_us"]["decode"], "µs",
               "Decoder.feed, one frame per call", "lower"),
        Figure("hotpath.features_us_per_frame", "Features per frame", st["per_frame_us"]["features"], "µs",
               "StreamingFeatures.push", "lower"),
        Figure("hotpath.publish_ms_per_window", "Publish per window (state JSON + paho)", pw["publish"], "ms",
               "Gateway._on_window on real results", "lower"),
    ]
    ab_how = ("decode + checks + features + ring + normalise + decision per window, model replaced by a constant; "
              "Decoder(batch=False) and handle() per packet vs Decoder() and handle() per read; same run, 1 CPU, "
              "process CPU time, interleaved best of 5")
    for r in ("1", "2", "15", "45"):
        v = work_ab["ms_per_window"][r]
        figs += [Figure(f"hotpath.runtime_work_ref_{r}fpr_ms", f"Runtime work per window, reference path, {r} "
                        "frames per read", v["reference"], "ms", ab_how, "lower"),
                 Figure(f"hotpath.runtime_work_blocks_{r}fpr_ms", f"Runtime work per window, batch decoder + blocks, "
                        f"{r} frames per read", v["blocks"], "ms", ab_how, "lower")]
    write_result("hotpath", {"bundle": str(bundle), "model_id": man.get("model_id"),
                             "quantization": man.get("quantization"), "stages": st, "runtime_work": work_ab,
                             **({"profile": prof} if prof else {})}, figs, args.out)
    if prof:
        print(prof["text"][:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
