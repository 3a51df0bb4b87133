"""Gateway capacity: simultaneous 60 Hz wearables one core serves with no frame dropped
and p99 window/alert latency under 100 ms, and the capacity curve.

    python bench/capacity.py [--bundle DIR] [--seconds 12] [--quick] [--max 4000] [--reads coalesced|per-read|both]
    python bench/capacity.py --curve [1,10,16,100,...] [--seconds 6] [--compare] [--reads ...]

Without ``--curve`` N is searched (see below; ``capacity.json``). With ``--curve`` one
trial runs per wearable count of the list and the curve is saved as
``bench/results/capacity_curve.json`` and plotted as ``docs/capacity-curve.png``:
CPU per wearer (the gateway's measured work, and the process's CPU time, per wearer
and second of stream), window and alert latency p99, frames dropped, and the
runtime's own work per window against the model call's. ``--compare`` adds the same
curve without batching (``batch_max = 1``).

Batching (``--batch-max``, ``--batch-wait-ms``, as ``[runtime]`` in the gateway config;
``--unbatched`` is ``--batch-max 1``): the simulated main loop does what
``Gateway.run`` does: windows stay due while reads keep arriving, and all due windows
are classified in one call (``Gateway.classify_due``) when the next read has not
arrived yet (the queue ran empty), the batch is full, or the oldest due window has
waited ``batch_wait_ms``. A window's latency is then the finish of that call minus the
arrival of the read that completed it.

The real gateway does the work: an in-process ``Gateway`` (real decoder, per-wearer
pipeline, LiteRT model, decisions, durable SQLite alert queue, paho publishing state
and alerts to a real Mosquitto), its thread and paho's pinned to one CPU; the broker
runs outside the pin. Every wearable sends its frames at 60 Hz with its own phase
(wearers are not synchronised) and its own part of the session; each frame arrives
as two chunks (one byte, then the rest: the two reads an idle serial line gives);
with coalesced reads a frame joins the held reads as one chunk, as the gateway's
reader threads keep a read without a frame delimiter until the rest arrives.

How the chunks reach the gateway (``--reads``):

- ``coalesced`` (default; what ``Gateway.run`` does): every chunk joins its wearer's
  held reads (the gateway's own ``HeldReads``, driven on the simulated clock), and
  when the simulated core frees the main loop takes the next read those rules hand
  over, all of that wearer's held chunks joined: at once when they complete its next
  window, else once the oldest has waited ``--read-hold-ms`` (the gateway's
  ``read_hold_ms``; with 0, whatever has arrived as soon as the core is free). An
  idle core waits for the next chunk or for the oldest held ones to come due.
- ``per-read`` (the earlier method): every chunk is its own read, in arrival order.
- ``both``: one after the other in the same run, for same-run ratios.

``--handoff`` (coalesced reads) also counts each chunk's way from a serial reader
thread to the held reads as the gateway's work: a ``deque`` append and popleft
and ``HeldReads.add``, as ``Gateway.run`` pays them. Without it (the method of every
earlier figure) chunks join the held reads for free; the reader threads' serial read
calls are not counted either way, nor are the main loop's own turns (waiting, waking):
``bench/main_loop.py`` measures the real ``Gateway.run``.

Time is simulated, work is not: reads are processed as fast as the core allows,
each one's service time is measured (wall time minus the time the thread sat
runnable while other processes held the core, from Linux schedstat; our own blocking
such as an fsync counts), and a single-server clock gives when it would have
finished: ``start = max(arrival, previous finish)``. Latency of a window = finish of
the read (or of the model call, batched) that completed it − arrival of the frame
that completed it. A frame is dropped when it would have waited longer than the
serial driver's buffer lasts (4095 bytes ≈ 0.8 s of one 60 Hz wearable). N is
doubled from 100 until it fails, then bisected. Writes ``bench/results/capacity.json``
(with ``--reads both``: both searches, the first one's figures).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import queue
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, Figure, pct, pin_one_core, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
import runtime_support as rs  # noqa: E402
from alanet.device.config import GatewayConfig  # noqa: E402

FS = 60.0
LATENCY_LIMIT_MS = 100.0
SERIAL_BUFFER_BYTES = 4095
READ_HOLD_MS = GatewayConfig.read_hold_ms  # the gateway's default
STATE_HOLD_MS = GatewayConfig.state_hold_ms  # the gateway's default


@dataclass(frozen=True)
class Trial:
    """One capacity trial of N wearables."""

    wearers: int
    seconds: float
    frames: int
    frames_accepted: int
    dropped: int
    windows: int
    alerts: int
    window_latency_ms: dict
    alert_latency_ms: dict
    max_wait_ms: float
    slow_reads: list  # (ms, what) of reads whose processing took over 10 ms
    preempted_s: float  # time other processes held the core during our reads (excluded)
    busy: float  # fraction of the stream time the core was busy
    ok: bool
    batch_max: int = 1  # windows per model call (1: no batching)
    batch_wait_ms: float = 0.0
    batches: int = 0  # model calls of the batched path
    mean_batch: float | None = None  # windows per call
    cpu_ms_per_wearer_s: float | None = None  # the gateway's measured work ÷ wearers ÷ stream seconds
    process_cpu_ms_per_wearer_s: float | None = None  # process CPU time (incl. this driver and paho) ÷ wearers ÷ s
    invoke_ms_per_window: float | None = None  # model time per window (a batch's call time ÷ its windows)
    runtime_ms_per_window: float | None = None  # the rest of the gateway's work × stride ÷ frames accepted
    reads: str = "coalesced"  # how reads reach the gateway: "coalesced" or "per-read" (see the module docstring)
    reads_processed: int = 0  # Gateway.process calls
    read_hold_ms: float = 0.0  # [runtime] read_hold_ms (coalesced reads)
    handoff: bool = False  # the chunks' queue hand-off to the held reads counted as work (coalesced reads)
    state_hold_ms: float = 0.0  # longest live state waited to go out with others (the link's; 0 for one wearer)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class RunDelay:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat; 0 elsewhere).

    Subtracted from a read's wall time, it leaves our own work and our own blocking
    (an fsync, a socket send) and removes preemption by other processes sharing the
    core, which would otherwise make the result depend on the machine's other load.
    """

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None

    def __call__(self) -> float:
        if self._fd is None:
            return 0.0
        return int(os.pread(self._fd, 64, 0).split()[1]) * 1e-9

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)


def default_bundle() -> Path:
    demo = REPO / "models" / "protective-demo"
    if (demo / "manifest.json").is_file():
        return demo
    return rs.cached_bundle(3, 120.0)[1]


def encoded_session(sess: rs.Session) -> list[bytes]:
    from alanet.firmware_bridge.codec import Encoder

    enc = Encoder()
    frames = [enc.frame(int(round(i * 1000 / FS)), sess.angles[i].tolist(), sess.emg[i].tolist(), seq=i)
              for i in range(sess.n)]
    frames[0] = enc.hello(0) + frames[0]  # a wearable announces itself before its first frame
    return frames


def run_trial(n: int, seconds: float, bundle: Path, frames: list[bytes], broker_url: str, work: Path,
              model=None, batch_max: int = 0, batch_wait_ms: float = 20.0, per_read: bool = False,
              read_hold_ms: float = READ_HOLD_MS, handoff: bool = False,
              state_hold_ms: float = STATE_HOLD_MS) -> Trial:
    """Stream ``seconds`` of 60 Hz frames from ``n`` wearables through one in-process gateway.

    ``handoff``: also count, as the gateway's work, each chunk's way from a reader thread to the held
    reads (the queue's size check, append, the wake test and popleft, ``HeldReads.add``), which the main loop and reader threads pay
    in ``Gateway.run`` (coalesced reads only; the serial read calls themselves are still not counted).
    """
    from collections import deque

    from alanet.device.config import WearableConfig, load_config
    from alanet.device.runtime import Gateway, settle_heap

    per = int(seconds * FS)
    cfg = load_config(None, {"port": "/dev/null", "bundle": str(bundle), "broker": broker_url, "gateway": "cap",
                             "state_dir": str(work / f"cap-{n}-{batch_max}-{batch_wait_ms:g}-{int(per_read)}")})
    cfg = replace(cfg, wearables=tuple(WearableConfig(f"w{i}", f"/dev/null{i}") for i in range(n)),
                  batch_max=batch_max, batch_wait_ms=batch_wait_ms, read_hold_ms=0.0 if per_read else read_hold_ms,
                  state_hold_ms=state_hold_ms)
    results: list = []
    stamps: list[float] = []  # per result: wall time minus time preempted, when the runtime handed it over
    run_delay = RunDelay()
    invoke = [0.0]  # model time (preemption excluded)
    if model is None:
        model = _model(bundle, work)
    model = (model[0], timed_spec(model[1], invoke, run_delay))

    def on_result(r) -> None:
        results.append(r)
        stamps.append(time.perf_counter() - run_delay())

    gw = Gateway(cfg, model=model, on_result=on_result)
    batched, full, wait_s = gw.batching, gw.batch_limit(), batch_wait_ms / 1000.0
    limit = full if batched else 1
    try:
        gw.link.start()
        if not gw.link.wait_connected(10):
            raise RuntimeError(f"broker {broker_url} not reachable")
        rng = np.random.default_rng(n)
        stride_s = gw.spec.stride / gw.spec.sample_rate_hz
        phase = rng.uniform(0, stride_s, n)  # wearers started at different moments: windows spread over a stride
        offset = rng.integers(0, len(frames) - per, n)
        # arrival schedule: (time, wearer, frame index in the stream)
        times = (np.arange(per)[None, :] / FS + phase[:, None]).ravel()
        slow: list[tuple[float, str]] = []
        who = np.repeat(np.arange(n), per)
        idx = np.tile(np.arange(per), n)
        order = np.argsort(times, kind="stable")
        hand = queue.SimpleQueue()
        free_at = 0.0
        lat_w: list[float] = []
        lat_a: list[float] = []
        max_wait = 0.0
        dropped = 0
        buffer_s = SERIAL_BUFFER_BYTES / len(frames[-1]) / FS  # DATA frames (the first one carries the HELLO too)
        next_poll = 0.05
        busy = 0.0
        stolen = 0.0  # wall time other processes took from this core during our reads (not counted)
        process, poll = gw.process, gw.link.poll
        pipes = [w.pipeline for w in gw.wearables]
        due_arrivals = [deque() for _ in range(n)]  # arrival of the read that completed each due window
        due_since = 0.0  # simulated time the oldest due window became due
        from alanet.firmware_bridge.codec import Encoder

        def measured(work, *a) -> tuple[float, float]:
            """Run ``work(*a)``: (its time with preemption excluded, its start minus the run delay so far)."""
            nonlocal busy, stolen
            r0 = run_delay()
            t0 = time.perf_counter()
            work(*a)
            d = time.perf_counter() - t0
            stolen_d = run_delay() - r0
            stolen += stolen_d
            d = max(d - stolen_d, 0.0)
            busy += d
            return d, t0 - r0

        def two_reads(i: int, wire: bytes) -> None:
            hand.put((i, wire[:1]))
            hand.put((i, wire[1:]))
            process(*hand.get(), defer=True)
            process(*hand.get(), defer=True)
            n_reads[0] += 2

        n_reads = [0]

        def classify(at: float) -> float:
            """Classify every due window at simulated time ``at``; returns when that finished."""
            before = len(results)
            d, base = measured(gw.classify_due)
            done = at + d
            if d > 0.01:
                slow.append((round(1000 * d, 1), "batch+alert" if any(r.event for r in results[before:]) else "batch"))
            for r, stamp in zip(results[before:], stamps[before:]):
                arrival = due_arrivals[int(r.wearer[1:])].popleft()
                # a window's state is out when the runtime handed it over; its alert when the batch is done
                lat_w.append(1000.0 * (min(at + max(stamp - base, 0.0), done) - arrival))
                if r.event is not None:
                    lat_a.append(1000.0 * (done - arrival))
            del results[before:]
            del stamps[before:]
            return done

        hello = Encoder().hello(0)
        for i in range(n):  # each wearable announced itself when its port opened (not timed; never dropped)
            process(i, hello)

        def arrival_of(i: int, seq: int) -> float:
            """When the frame ``seq`` of wearer ``i`` arrived (the stream's seq is its session frame index)."""
            return float(phase[i] + (seq - int(offset[i])) / FS)

        def served(i: int, start: float, d: float, before: int, due0: int, what_slow: str) -> float:
            """Account one read of wearer ``i`` that started at ``start`` and took ``d``; returns its finish."""
            nonlocal due_since
            done = start + d
            if d > 0.01:
                slow.append((round(1000 * d, 1), "alert" if any(r.event for r in results[before:]) else
                             "window" if len(results) > before else what_slow))
            if len(results) > before:  # immediate mode: out when the read is done
                for r in results[before:]:
                    ms = 1000.0 * (done - arrival_of(i, r.seq))
                    lat_w.append(ms)
                    if r.event is not None:
                        lat_a.append(ms)
                del results[before:]
                del stamps[before:]
            new_due = pipes[i].due - due0
            if new_due > 0:
                if gw.due == new_due:
                    due_since = done
                due_arrivals[i].extend(arrival_of(i, d_.seq) for d_ in pipes[i]._due[-new_due:])
                if gw.due >= full or done - due_since >= wait_s:  # full, or the oldest waited long enough
                    done = classify(done)
            elif gw.due and done - due_since >= wait_s:
                done = classify(done)
            return done

        def proc(i: int, b: bytes) -> None:
            n_reads[0] += 1
            process(i, b, defer=True)

        def poll_at(start: float) -> float:
            nonlocal next_poll
            if start >= next_poll:  # the main loop polls paho between reads
                start += measured(poll)[0]
                next_poll = start + 0.05
            return start

        settle_heap()  # as `alanet run` does once the gateway is built
        cpu0 = time.process_time()
        if per_read:
            for k in order:
                arrival = float(times[k])
                if batched and gw.due and arrival > free_at:  # the queue ran empty: classify what is due
                    free_at = classify(free_at)
                i = int(who[k])
                wire = frames[int(offset[i]) + int(idx[k])]
                start = max(arrival, free_at)
                wait = start - arrival
                if wait > buffer_s:
                    dropped += 1
                    continue
                max_wait = max(max_wait, wait)
                start = poll_at(start)
                before, due0 = len(results), pipes[i].due
                d = measured(two_reads, i, wire)[0]
                free_at = served(i, start, d, before, due0, "frame")
        else:
            reads = gw.reads  # the gateway's own hold rules (HeldReads), on the simulated clock
            arrived = [deque() for _ in range(n)]  # per wearer: arrival of each chunk held, in order
            ptr, total = 0, len(order)
            inf = float("inf")
            handed: deque = deque()  # the reader threads' queue (handoff), as the gateway's
            counted = [0] * n

            def hand_over(chunks: list[tuple[int, bytes, float]]) -> None:
                """What Gateway.run does per chunk: a reader thread queues it (no wake unless it may complete a
                window), the main loop takes it in and holds it."""
                put, get, add, need = handed.append, handed.popleft, reads.add, reads.need
                for i, c, a in chunks:
                    len(handed)  # on_serial_data's bound check
                    put((i, c, a))
                    counted[i] += len(c)
                    counted[i] >= need(i)  # noqa: B015 - its wake test (the wake itself is the loop's turn)
                for _ in chunks:
                    add(*get())

            def admit(t: float) -> float:
                """Every frame that has arrived by ``t`` joins its wearer's held reads as one chunk (the gateway's
                reader threads keep a frame's first byte until the rest, with its delimiter, arrives);
                returns the measured time of handing them over (``handoff``; else 0, not counted)."""
                nonlocal ptr
                chunks = []
                while ptr < total and times[order[ptr]] <= t:
                    k = order[ptr]
                    i = int(who[k])
                    wire = frames[int(offset[i]) + int(idx[k])]
                    a = float(times[k])
                    chunks.append((i, wire, a))
                    arrived[i].append(a)
                    ptr += 1
                if not chunks:
                    return 0.0
                if handoff:
                    return measured(hand_over, chunks)[0]
                for i, c, a in chunks:
                    reads.add(i, c, a)
                return 0.0

            while True:
                free_at += admit(free_at)
                item = reads.take(free_at)
                if item is None:
                    if batched and gw.due:  # nothing to read now: classify what is due
                        free_at = classify(free_at)
                        continue
                    # idle until the next chunk arrives or the oldest held ones come due
                    t = min(float(times[order[ptr]]) if ptr < total else inf, reads.next_due() or inf)
                    if t == inf:
                        break
                    free_at = max(free_at, t)
                    continue
                i, chunks, _ = item
                start = free_at
                when = [arrived[i].popleft() for _ in chunks]
                # bytes that waited longer than the serial driver's buffer lasts are lost (whole frames)
                keep = [c for c, a in zip(chunks, when) if start - a <= buffer_s]
                dropped += len(chunks) - len(keep)
                if not keep:
                    continue
                max_wait = max(max_wait, start - when[len(chunks) - len(keep)])
                start = poll_at(start)
                before, due0 = len(results), pipes[i].due
                d = measured(proc, i, b"".join(keep))[0]
                free_at = served(i, start, d, before, due0, f"read of {len(keep)} chunks")
        if gw.due:
            free_at = classify(free_at)
        cpu = time.process_time() - cpu0
        run_delay.close()
        accepted = sum(w.pipeline.counters.frames for w in gw.wearables)
        stride = gw.spec.stride
        invoke_s = invoke[0]
        windows = sum(w.pipeline.counters.windows for w in gw.wearables)
        gw.link.flush(10)
        alerts = gw.alerts
    finally:
        gc.unfreeze()  # this trial's gateway may go
        gw.link.stop(gw.status_topic, b"{}")
        gw.queue.close()
        gw._lock.release()
    sw, sa = summary(lat_w), summary(lat_a)
    ok = dropped == 0 and accepted == n * per and (sw["p99"] or 0) < LATENCY_LIMIT_MS and \
        (sa["p99"] or 0) < LATENCY_LIMIT_MS
    return Trial(n, seconds, n * per, accepted, dropped, windows, alerts, sw, sa, round(1000 * max_wait, 3),
                 sorted(slow, reverse=True)[:10], round(stolen, 3), round(busy / seconds, 3), ok,
                 batch_max=limit, batch_wait_ms=batch_wait_ms if batched else 0.0,
                 batches=gw.batches, mean_batch=round(gw.batch_windows / gw.batches, 2) if gw.batches else None,
                 cpu_ms_per_wearer_s=round(1000 * busy / n / seconds, 4),
                 process_cpu_ms_per_wearer_s=round(1000 * cpu / n / seconds, 4),
                 invoke_ms_per_window=round(1000 * invoke_s / windows, 4) if windows else None,
                 # steady state (one window per stride of frames; a short trial's first window needs a full one)
                 runtime_ms_per_window=round(1000 * (busy - invoke_s) * stride / accepted, 4) if accepted else None,
                 reads="per-read" if per_read else "coalesced", reads_processed=n_reads[0],
                 read_hold_ms=cfg.read_hold_ms, handoff=handoff and not per_read,
                 state_hold_ms=gw.link.state_hold_s * 1000.0)


def summary(v: list[float]) -> dict:
    return {"p50": pct(v, 50), "p99": pct(v, 99), "max": pct(v, 100), "n": len(v)}


def timed_spec(spec, total: list, run_delay: RunDelay):
    """``spec`` whose model calls add their time (preemption excluded) to ``total[0]``."""
    def timed(f):
        if f is None:
            return None

        def call(x):
            r0, t0 = run_delay(), time.perf_counter()
            try:
                return f(x)
            finally:
                total[0] += max(time.perf_counter() - t0 - (run_delay() - r0), 0.0)
        return call

    return replace(spec, predict=timed(spec.predict), predict_batch=timed(spec.predict_batch))


def batch_call_ms(spec, n: int = 16, reps: int = 60) -> float:
    """Median model time per window of one call over ``n`` due windows (``predict_windows``, 1 thread)."""
    from alanet.device.pipeline import predict_windows

    x = np.random.default_rng(0).standard_normal((n, spec.length, spec.n_channels)).astype(np.float32)
    predict_windows(spec, x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        predict_windows(spec, x)
        times.append(time.perf_counter() - t0)
    return round(1000.0 * float(np.median(times)) / n, 4)


def _model(bundle: Path, work: Path):
    from alanet.device.config import load_config
    from alanet.device.runtime import load_model

    return load_model(load_config(None, {"port": "/dev/null", "bundle": str(bundle), "state_dir": str(work / "m")}))


def _line(t: Trial) -> str:
    return (f"  N={t.wearers:5d}: {'ok  ' if t.ok else 'FAIL'} window p99 {t.window_latency_ms['p99']} ms, alert p99 "
            f"{t.alert_latency_ms['p99']} ms (n={t.alert_latency_ms['n']}), dropped {t.dropped}, core busy "
            f"{t.busy:.0%}, CPU {t.cpu_ms_per_wearer_s} ms/wearer/s, batch {t.mean_batch} (max {t.batch_max}), "
            f"invoke {t.invoke_ms_per_window} vs runtime {t.runtime_ms_per_window} ms/window, "
            f"{t.reads} reads ({t.frames_accepted / max(t.reads_processed, 1):.2f} frames/read"
            f"{', hand-off counted' if t.handoff else ''}), "
            f"slowest reads {t.slow_reads[:3]}, preempted {t.preempted_s:.2f} s")


def find_capacity(seconds: float, bundle: Path, frames: list[bytes], broker_url: str, work: Path, start: int = 100,
                  maximum: int = 4000, precision: float = 0.05, log=print, batch_max: int = 0,
                  batch_wait_ms: float = 20.0, per_read: bool = False,
                  read_hold_ms: float = READ_HOLD_MS, handoff: bool = False,
                  state_hold_ms: float = STATE_HOLD_MS) -> tuple[int, list[Trial]]:
    """Largest N that passes (doubling from ``start``, then bisection to ``precision``)."""
    model = _model(bundle, work)
    trials: list[Trial] = []

    def trial(n: int) -> bool:
        t = run_trial(n, seconds, bundle, frames, broker_url, work, model, batch_max, batch_wait_ms, per_read,
                      read_hold_ms, handoff, state_hold_ms)
        trials.append(t)
        log(_line(t))
        return t.ok

    lo, hi = 0, None
    n = start
    while n <= maximum:
        if trial(n):
            lo = n
            n *= 2
        else:
            hi = n
            break
    if hi is None:
        return lo, trials
    if lo == 0:  # even the start fails: bisect below it
        lo_try = max(1, start // 8)
        while lo_try >= 1 and not trial(lo_try):
            hi, lo_try = lo_try, lo_try // 2
        if lo_try < 1:
            return 0, trials
        lo = lo_try
    while hi - lo > max(1, int(precision * lo)):
        mid = (lo + hi) // 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    return lo, trials


DEFAULT_CURVE = (1, 10, 16, 100, 250, 500, 750, 1000, 1250, 1500)


def run_curve(counts: list[int], seconds: float, bundle: Path, frames: list[bytes], broker_url: str, work: Path,
              batch_max: int, batch_wait_ms: float, log=print, per_read: bool = False,
              read_hold_ms: float = READ_HOLD_MS, handoff: bool = False,
              state_hold_ms: float = STATE_HOLD_MS) -> list[Trial]:
    """One trial per wearable count; past the first count that drops frames the rest still run (the curve)."""
    model = _model(bundle, work)
    out = []
    for n in counts:
        t = run_trial(n, seconds, bundle, frames, broker_url, work, model, batch_max, batch_wait_ms, per_read,
                      read_hold_ms, handoff, state_hold_ms)
        log(_line(t))
        out.append(t)
    return out


def plot_curve(curves: dict[str, list[Trial]], path: Path, note: str) -> None:
    """CPU per wearer, alert/window p99 and frames dropped against the number of wearables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4.2))
    for k, (name, trials) in enumerate(curves.items()):
        col = f"C{k}"
        xs = [t.wearers for t in trials]
        a.plot(xs, [t.cpu_ms_per_wearer_s for t in trials], "o-", color=col, label=f"{name}: gateway work")
        a.plot(xs, [t.process_cpu_ms_per_wearer_s for t in trials], "x--", color=col, alpha=0.6,
               label=f"{name}: process CPU")
        b.plot(xs, [t.alert_latency_ms["p99"] for t in trials], "o-", color=col, label=f"{name}: alert p99")
        b.plot(xs, [t.window_latency_ms["p99"] for t in trials], "x--", color=col, alpha=0.6,
               label=f"{name}: window p99")
        c.plot(xs, [100.0 * t.dropped / t.frames for t in trials], "o-", color=col, label=name)
    for ax in (a, b, c):
        ax.set_xscale("log")
        ax.set_xlabel("60 Hz wearables on one core")
        ax.grid(True, which="both", alpha=0.3)
    a.set_ylabel("CPU ms per wearer per second of stream")
    b.set_yscale("log")
    b.axhline(LATENCY_LIMIT_MS, color="red", lw=0.8, ls=":")
    b.set_ylabel("latency p99, ms (simulated clock, measured work)")
    c.set_ylabel("frames dropped, %")
    for ax in (a, b, c):
        ax.legend(fontsize=7)
    fig.suptitle(f"Gateway capacity curve ({note})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def curve_main(args: argparse.Namespace, bundle: Path, frames: list[bytes], broker_url: str, work: Path) -> int:
    counts = [int(v) for v in args.curve.split(",")] if args.curve else list(DEFAULT_CURVE)
    spec = _model(bundle, work)[1]
    native = max(spec.batch_sizes)
    call16 = batch_call_ms(spec, 16)
    call1 = batch_call_ms(spec, 1)
    print(f"model call per window: {call1} ms at 1 window, {call16} ms at 16 (native batch sizes {spec.batch_sizes})")
    from alanet.device.runtime import DEFER_MIN

    if (args.batch_max or max(DEFER_MIN, native)) > 1:  # the gateway's default defers even a batch-1 model
        modes = {f"batched (up to {args.batch_max or max(DEFER_MIN, native)})": (args.batch_max, False)}
        if args.compare:
            modes["unbatched"] = (1, False)
    else:  # a batch-1 model and no --batch-max: the runtime does not batch
        modes = {"unbatched": (1, False)}
        if args.compare:
            print("--compare: the model runs batch 1 only and --batch-max was not given: one curve (unbatched)")
    if args.reads != "coalesced":  # the per-read curve(s): next to the coalesced ones, or instead of them
        per = {f"{k.split(' ')[0]}-per-read{k[len(k.split(' ')[0]):]}": (bm, True) for k, (bm, _) in modes.items()}
        modes = per if args.reads == "per-read" else {**modes, **per}
    curves: dict[str, list[Trial]] = {}
    t0 = time.perf_counter()
    for name, (bm, per_read) in modes.items():
        print(f"{name} (batch_max {bm or 'auto'}, batch_wait_ms {args.batch_wait_ms:g}, "
              f"{'per-read' if per_read else 'coalesced'} reads):", flush=True)
        curves[name] = run_curve(counts, args.seconds, bundle, frames, broker_url, work, bm, args.batch_wait_ms,
                                 read_hold_ms=args.read_hold_ms, handoff=args.handoff,
                                 per_read=per_read, state_hold_ms=args.state_hold_ms)
    took = time.perf_counter() - t0
    man = json.loads((bundle / "manifest.json").read_text())
    figs = []
    for label, trials in curves.items():
        name = label.split(" ")[0]  # the key: batched / unbatched
        passing = [t.wearers for t in trials if t.ok]
        best = max(passing) if passing else 0
        print(f"{label}: largest passing count of the curve {best}")
        figs.append(Figure(f"capacity_curve.{name}.largest_passing", f"Capacity curve ({name}): largest passing N "
                           "of the list", best, "wearables", "largest N of the curve with 0 dropped, p99 < 100 ms",
                           "higher"))
        for t in trials:
            if t.wearers in (1, 16, 1000):
                figs.append(Figure(f"capacity_curve.{name}.n{t.wearers}.alert_p99_ms",
                                   f"Capacity curve ({name}): alert p99 at {t.wearers} wearables",
                                   t.alert_latency_ms["p99"], "ms", f"simulated clock, measured work; "
                                   f"n={t.alert_latency_ms['n']}"))
                figs.append(Figure(f"capacity_curve.{name}.n{t.wearers}.cpu_ms_per_wearer_s",
                                   f"Capacity curve ({name}): CPU per wearer at {t.wearers} wearables",
                                   t.cpu_ms_per_wearer_s, "ms/s", "gateway's measured work ÷ wearers ÷ stream s"))
            if t.wearers == 16 and t.runtime_ms_per_window is not None:
                figs.append(Figure(f"capacity_curve.{name}.n16.runtime_vs_batch16_call",
                                   f"Capacity curve ({name}): runtime's own work per window at 16 wearables ÷ "
                                   "model call per window at 16 windows a call",
                                   round(t.runtime_ms_per_window / call16, 3), "×",
                                   f"runtime {t.runtime_ms_per_window} ms per window (steady state, everything but "
                                   f"the model), model {call16} ms per window in a call of 16 ({call1} ms alone)"))
    note = (f"{man.get('model_id')}, {args.seconds:g} s per trial, 1 thread, load {os.getloadavg()[0]:.1f}")
    load = [round(v, 2) for v in os.getloadavg()]
    plot = args.plot or (REPO / "docs" / "capacity-curve.png")
    plot_curve(curves, plot, note)
    write_result("capacity_curve", {"bundle": str(bundle), "model_id": man.get("model_id"),
                                    "quantization": man.get("quantization"), "seconds_per_trial": args.seconds,
                                    "batch_wait_ms": args.batch_wait_ms, "counts": counts, "plot": str(plot),
                                    "native_batch_sizes": list(spec.batch_sizes),
                                    "model_call_ms_per_window": {"1": call1, "16": call16},
                                    "curves": {k: [t.as_dict() for t in v] for k, v in curves.items()},
                                    "load_average": load, "took_s": round(took, 1)}, figs, args.out)
    print(f"curve in {took:.0f} s; plot {plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, help="bundle (default: models/protective-demo, else the test bundle)")
    ap.add_argument("--seconds", type=float, default=12.0, help="stream seconds per trial (>= 3)")
    ap.add_argument("--quick", action="store_true", help="6 s trials, 10 %% precision")
    ap.add_argument("--max", type=int, default=4000, help="stop doubling past this many wearables")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--curve", nargs="?", const="", default=None, metavar="N,N,...",
                    help=f"run the capacity curve over these wearable counts (default {','.join(map(str, DEFAULT_CURVE))})"
                         " instead of searching N")
    ap.add_argument("--compare", action="store_true", help="with --curve: also the curve without batching")
    ap.add_argument("--plot", type=Path, default=None, help="with --curve: the plot (default docs/capacity-curve.png)")
    ap.add_argument("--batch-max", type=int, default=0,
                    help="windows per model call, as [runtime] batch_max (0: the model's largest native batch)")
    ap.add_argument("--batch-wait-ms", type=float, default=20.0, help="as [runtime] batch_wait_ms (default 20)")
    ap.add_argument("--read-hold-ms", type=float, default=READ_HOLD_MS,
                    help=f"as [runtime] read_hold_ms, coalesced reads (default {READ_HOLD_MS:g}, the gateway's; "
                         "0 = serve each read as it comes)")
    ap.add_argument("--state-hold-ms", type=float, default=STATE_HOLD_MS,
                    help=f"as [mqtt] state_hold_ms (default {STATE_HOLD_MS:g}, the gateway's; 0 = each live state "
                         "message at once)")
    ap.add_argument("--unbatched", action="store_true", help="no batching (--batch-max 1)")
    ap.add_argument("--reads", choices=("coalesced", "per-read", "both"), default="coalesced",
                    help="how serial reads reach the gateway: coalesced (default; a wearer's turn takes everything "
                         "that arrived), per-read (every chunk its own read, the earlier method), or both in one run")
    ap.add_argument("--per-read", dest="reads", action="store_const", const="per-read",
                    help="same as --reads per-read")
    ap.add_argument("--handoff", action="store_true",
                    help="coalesced reads: also count each chunk's way from the reader threads to the held reads "
                         "(queue put and get, HeldReads.add) as the gateway's work, as Gateway.run pays it")
    args = ap.parse_args(argv)
    if args.unbatched:
        args.batch_max = 1
    if args.batch_max < 0 or args.batch_wait_ms < 0:
        ap.error("--batch-max and --batch-wait-ms must be >= 0")
    if not 0 <= args.read_hold_ms <= 1000:
        ap.error(f"--read-hold-ms must lie in 0 ... 1000 (as [runtime] read_hold_ms), got {args.read_hold_ms:g}")
    if not 0 <= args.state_hold_ms <= 1000:
        ap.error(f"--state-hold-ms must lie in 0 ... 1000 (as [mqtt] state_hold_ms), got {args.state_hold_ms:g}")
    if args.curve:
        try:
            if any(int(v) < 1 for v in args.curve.split(",")):
                raise ValueError
        except ValueError:
            ap.error(f"--curve: expected wearable counts >= 1 separated by commas, got {args.curve!r}")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("alanet").setLevel(logging.WARNING)
    if args.curve is not None and args.seconds == ap.get_default("seconds"):
        args.seconds = 6.0
    seconds = 6.0 if args.quick else args.seconds
    args.seconds = seconds
    bundle = args.bundle or default_bundle()
    sess = rs.make_session(seed=3, duration_s=max(60.0, seconds + 20))
    frames = encoded_session(sess)
    from alanet.device.broker import EmbeddedBroker

    with EmbeddedBroker(prefer="mosquitto") as broker, tempfile.TemporaryDirectory(prefix="alanet-cap-") as tmp:
        cpu = pin_one_core()  # after the broker started: it stays unpinned; paho's thread inherits the pin
        print(f"capacity: bundle {bundle}, {seconds:g} s per trial, pinned to CPU {cpu}", flush=True)
        if args.curve is not None:
            return curve_main(args, bundle, frames, broker.url, Path(tmp))
        t0 = time.perf_counter()
        searches = {}
        for mode in (("coalesced", "per-read") if args.reads == "both" else (args.reads,)):
            print(f"{mode} reads:", flush=True)
            searches[mode] = find_capacity(seconds, bundle, frames, broker.url, Path(tmp), maximum=args.max,
                                           precision=0.1 if args.quick else 0.05, batch_max=args.batch_max,
                                           batch_wait_ms=args.batch_wait_ms, per_read=mode == "per-read",
                                           read_hold_ms=args.read_hold_ms, handoff=args.handoff,
                                           state_hold_ms=args.state_hold_ms)
        best, trials = next(iter(searches.values()))
        took = time.perf_counter() - t0
    at = next((t for t in trials if t.wearers == best), None)
    for mode, (b, _) in searches.items():
        print(f"capacity ({mode} reads): {b} wearables at 60 Hz on one core")
    print(f"searched in {took:.0f} s, load average {os.getloadavg()[0]:.2f}")
    man = json.loads((bundle / "manifest.json").read_text())
    how = (f"in-process gateway (decoder+pipeline+LiteRT+SQLite queue+paho→Mosquitto) pinned to 1 CPU; {seconds:g} s "
           "of 60 Hz frames per wearer, measured service times (preemption by other processes excluded) on a "
           "simulated arrival clock; pass = 0 dropped and p99 < 100 ms")
    figs = [Figure("capacity.wearables_per_core", "Gateway capacity: 60 Hz wearables per core", best, "wearables", how,
                   "higher")]
    if at:
        figs.append(Figure("capacity.window_p99_ms_at_capacity", "Window latency p99 at capacity",
                           at.window_latency_ms["p99"], "ms", "arrival of the window's last frame → state published "
                           "(simulated clock, measured work)", ""))
    write_result("capacity", {"bundle": str(bundle), "model_id": man.get("model_id"),
                              "quantization": man.get("quantization"), "seconds_per_trial": seconds,
                              "wearables_per_core": best, "batch_max": args.batch_max,
                              "batch_wait_ms": args.batch_wait_ms, "read_hold_ms": args.read_hold_ms,
                              "state_hold_ms": args.state_hold_ms,
                              "handoff": args.handoff, "trials": [t.as_dict() for t in trials],
                              "reads": args.reads, "by_reads": {m: {"wearables_per_core": b,
                                                                   "trials": [t.as_dict() for t in ts]}
                                                               for m, (b, ts) in searches.items()},
                              "load_average": [round(v, 2) for v in os.getloadavg()],
                              "search_s": round(took, 1)}, figs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
