"""Structure-aware fuzz of the whole gateway path: bytes → decoder → pipeline → decisions → alert queue → MQTT.

    python bench/gateway_fuzz.py [--streams 1000000] [--jobs 2] [--seed 1] [--quick] [--out FILE]

One in-process :class:`~alanet.device.runtime.Gateway` per job (real decoder, real
pipeline, a real LiteRT model with a 16-frame window so windows come often, real
decisions, state and alert JSON, the durable SQLite alert queue on tmpfs; with
``--broker`` paho publishing to a real Mosquitto) serves two wearers. Wearer ``w0`` gets the fuzz: a million short streams,
each starting with the ``0x00`` a wearable sends at boot, of these kinds:

- ``clean``: a HELLO and valid frames;
- ``hostile_values``: valid frames where some values are ±FLT_MAX, ±inf, NaN,
  denormals, values just inside and just outside the physical bounds, -0.0;
- ``wrong_counts``: DATA frames with other angle/sEMG counts (0..20 each), including
  17 values split 12+5;
- ``hello_changes``: HELLOs that change mid-stream (another rate, layout, protocol
  version or channel counts, device ids with control characters) between frames;
- ``raw_emg``: RAW_EMG blocks with changing channel counts, rates and hostile samples;
- ``random_bytes``: random bytes, with and without delimiters;
- ``mutated``: a valid stream with bytes flipped, inserted, deleted or duplicated
  (delimiters included);
- ``seq_chaos``: valid frames whose sequence numbers jump, repeat, go back and wrap.

Every stream ends with a ``0x00`` too, so what damage left half-read belongs to its own
stream. Every stream's bytes reach the gateway in random read sizes (1..300 bytes). An
independent oracle (the protocol's rules restated: frames count only after an
accepted HELLO, with 13 + 4 finite values within the bounds of PROTOCOL.md §3.4)
says how many frames each stream must get accepted. Per stream it checks: no
exception escapes ``Gateway.process``; no frame is accepted that the oracle rejects
(``corrupt_accepted``, must be 0; for ``random_bytes`` and ``mutated`` streams the
oracle's count is an upper bound); for structure-only streams, no valid frame is
rejected either (``valid_rejected``, must be 0). Wearer ``w1`` meanwhile gets a clean
session, a few frames per fuzz stream: it must classify every window it is owed and
record no fault. At the end every queued alert must be valid JSON (no NaN) that fits
``alert.schema.json``. Reports streams/s (generation included) and the process RSS.

Writes ``bench/results/gateway_fuzz.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, Figure, rss_mb, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))

F32_MAX = 3.4028234663852886e38
DENORMAL = 1.401298464324817e-45
KINDS = ("clean", "hostile_values", "wrong_counts", "hello_changes", "raw_emg", "random_bytes", "mutated",
         "seq_chaos")
EXACT = {"clean", "hostile_values", "wrong_counts", "hello_changes", "raw_emg"}  # oracle exact (no damage, no seq games)
FUZZ_WINDOW, FUZZ_STRIDE = 16, 4
CLEAN_FRAMES_PER_STREAM = 3


def oracle_frame_ok(angles: list[float], emg: list[float]) -> bool:
    """The protocol's rule for a DATA frame after an accepted HELLO, restated independently (PROTOCOL.md §3.4):
    13 angles and 4 sEMG values, as float32 on the wire, every one within its bound (NaN never is)."""
    if len(angles) != 13 or len(emg) != 4:
        return False
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.all(np.abs(np.asarray(angles, np.float32)) <= np.float32(2 * math.pi))
                    and np.all(np.abs(np.asarray(emg, np.float32)) <= np.float32(1e5)))


@dataclass
class Stream:
    kind: str
    data: bytes
    expect: int  # frames the gateway must accept (an upper bound when the stream is damaged)
    exact: bool


@dataclass
class Generator:
    """Makes streams for one fuzzed wearer and keeps the oracle's view of it (the accepted HELLO)."""

    rng: np.random.Generator
    fs: float = 60.0
    seq: int = 0  # next DATA seq (strictly increasing outside seq_chaos streams)
    hello_ok: bool = False  # does the gateway hold an accepted HELLO for this wearer (oracle)?
    sess: Any = None

    # ---- packets ----
    def _values(self) -> tuple[list[float], list[float]]:
        i = int(self.rng.integers(0, self.sess.n))
        return self.sess.angles[i].tolist(), self.sess.emg[i].tolist()

    def frame(self, angles: list[float], emg: list[float], seq: int | None = None) -> tuple[bytes, bool]:
        """Wire bytes of a DATA frame and whether the decoder can read it (finite values, counts < 256)."""
        from alanet.firmware_bridge.codec import encode_frame
        from alanet.firmware_bridge.protocol import Frame

        if seq is None:
            seq, self.seq = self.seq, (self.seq + 1) % (1 << 32)
        wire = encode_frame(Frame(seq, int(seq * 1000 / self.fs) % (1 << 32), tuple(angles), tuple(emg)))
        decodable = math.isfinite(sum(angles) + sum(emg))  # every hostile value here fits a float32
        return wire, decodable

    def hello(self, good: bool = True, decodable: bool = False) -> bytes:
        from alanet.firmware_bridge.codec import encode_hello

        r = self.rng
        if good:
            dev = "wear-" + str(int(r.integers(0, 3)))
            if r.random() < 0.2:  # strings a log line must not carry raw
                dev = "x\n\x1b[31mALERT w1 protective raised p=1.00 t=0-1 s\r"[: int(r.integers(1, 33))]
            raw = 0.0 if r.random() < 0.7 else float(r.choice([250.0, 1000.0]))
            self.hello_ok = True
            return encode_hello(0, 0, dev, "fw-" + str(int(r.integers(0, 3))), sample_rate_hz=self.fs,
                                raw_emg_rate_hz=raw)
        variant = int(r.integers(0, 5 if decodable else 6))
        was_ok, self.hello_ok = self.hello_ok, False
        if variant == 0:
            return encode_hello(0, 0, "wear-rate", "fw", sample_rate_hz=float(r.choice([50.0, 0.0, 1e9, -60.0])))
        if variant == 1:
            return encode_hello(0, 0, "wear-layout", "fw", layout="imu-9a0e")
        if variant == 2:
            return encode_hello(0, 0, "wear-v2", "fw", protocol_version=2)
        if variant == 3:
            return encode_hello(0, 0, "wear-counts", "fw", n_angles=12, n_emg=5)
        if variant == 4:
            return encode_hello(0, 0, "wear-raw", "fw", raw_emg_rate_hz=float(r.choice([-1.0, 1e30])))
        # malformed (a non-finite rate): the decoder drops it, the gateway keeps the HELLO it had
        self.hello_ok = was_ok
        return encode_hello(0, 0, "wear-nan", "fw", sample_rate_hz=float("nan"))

    def raw_block(self) -> bytes:
        from alanet.firmware_bridge.codec import encode_raw_emg

        r = self.rng
        n_ch = int(r.choice([4, 4, 1, 3, 8]))
        n_s = int(r.integers(1, min(60, 250 // n_ch) + 1))  # within the 1024-byte packet
        samples = r.normal(0, 50, (n_s, n_ch))
        if r.random() < 0.3:
            samples[int(r.integers(0, n_s)), int(r.integers(0, n_ch))] = float(r.choice([F32_MAX, -F32_MAX, 1e8]))
        rate = float(r.choice([250.0, 1000.0, 5.0, 0.5, 1e30]))
        return encode_raw_emg(int(r.integers(0, 1 << 32)), 0, rate, samples.tolist())

    # ---- streams ----
    def make(self, kind: str) -> Stream:
        r = self.rng
        parts: list[bytes] = [b"\x00"]
        expect = 0
        n = int(r.integers(1, 25))
        if kind == "random_bytes":
            k = int(r.integers(1, 2000))
            data = r.integers(0, 256, k, dtype=np.uint8).tobytes()
            if r.random() < 0.5:
                data = data.replace(b"\x00", b"\x01")
            parts.append(data)
            # the oracle's HELLO state is unknown after random bytes (a HELLO is not forged by chance, but be
            # strict): the next structured stream starts with a HELLO of its own
            return Stream(kind, b"".join(parts) + b"\x00", 0, False)
        # every other stream starts by (re)announcing the wearable, so the oracle knows the HELLO state
        parts.append(self.hello(good=r.random() > (0.4 if kind == "hello_changes" else 0.1), decodable=True))
        for _ in range(n):
            if kind == "hello_changes" and r.random() < 0.3:
                parts.append(self.hello(good=r.random() > 0.4))
            if kind == "raw_emg" and r.random() < 0.5:
                parts.append(self.raw_block())
            angles, emg = self._values()
            if kind == "hostile_values" and r.random() < 0.5:
                hostile = [F32_MAX, -F32_MAX, math.inf, -math.inf, math.nan, DENORMAL, -DENORMAL, 1.17549435e-38,
                           6.2831, -6.2831, 6.2833, -6.2833, 1e5, -1e5, 1.0001e5, -0.0, 1e30, 3.0e38]
                for _ in range(int(r.integers(1, 4))):
                    v = float(r.choice(hostile))
                    if r.random() < 0.75:
                        angles[int(r.integers(0, 13))] = v
                    else:
                        emg[int(r.integers(0, 4))] = v
            if kind == "wrong_counts" and r.random() < 0.5:
                if r.random() < 0.3:
                    angles, emg = (angles + emg)[:12], (angles + emg)[12:]
                else:
                    na, ne = int(r.integers(0, 21)), int(r.integers(0, 21))
                    angles = (angles * 2)[:na]
                    emg = (emg * 6)[:ne]
            if kind == "seq_chaos":
                jump = float(r.random())
                if jump < 0.2:
                    self.seq = (self.seq - int(r.integers(1, 5))) % (1 << 32)  # repeat or go back
                elif jump < 0.3:
                    self.seq = (self.seq + int(r.integers(2, 400))) % (1 << 32)  # a gap
                elif jump < 0.35:
                    self.seq = (1 << 32) - int(r.integers(1, 3))  # about to wrap
            wire, decodable = self.frame(angles, emg)
            parts.append(wire)
            # mutated: an upper bound whatever HELLO the damage leaves the gateway with
            if decodable and (self.hello_ok or kind == "mutated") and oracle_frame_ok(angles, emg):
                expect += 1
        data = b"".join(parts)
        if kind == "mutated":
            data = mutate(r, data)
            self.hello_ok = False  # unknown now: the next stream re-announces
        elif kind == "seq_chaos":
            # later streams continue far away (a wrap may have brought the counter back near seqs the
            # gateway accepted earlier: a repeat of its last accepted seq is a duplicate and rightly dropped)
            self.seq = (self.seq + int(r.integers(1 << 20, 1 << 30))) % (1 << 32)
        # the closing 0x00 ends whatever damage left half-read (a wearable's next boot would)
        return Stream(kind, data + b"\x00", expect, kind in EXACT)


def mutate(r: np.random.Generator, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(int(r.integers(1, 6))):
        if len(b) < 2:
            break
        op = int(r.integers(0, 4))
        k = int(r.integers(1, len(b)))
        if op == 0:
            b[k] ^= 1 << int(r.integers(0, 8))
        elif op == 1:
            b[k:k] = r.integers(0, 256, int(r.integers(1, 16)), dtype=np.uint8).tobytes()
        elif op == 2:
            del b[k:k + int(r.integers(1, 16))]
        else:
            j = int(r.integers(0, len(b)))
            b[k:k] = b[j:j + int(r.integers(1, 64))]
    return bytes(b)


def split_reads(r: np.random.Generator, data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        k = int(r.integers(1, 301))
        out.append(data[i:i + k])
        i += k
    return out


@dataclass
class JobResult:
    streams: int = 0
    seconds: float = 0.0
    bytes: int = 0
    by_kind: dict = field(default_factory=dict)
    escaped: int = 0  # exceptions out of Gateway.process (must be 0)
    escaped_examples: list = field(default_factory=list)
    corrupt_accepted: int = 0  # frames accepted beyond what the oracle allows (must be 0)
    valid_rejected: int = 0  # valid frames of undamaged streams not accepted (must be 0)
    mismatch_examples: list = field(default_factory=list)
    caught_faults: int = 0  # exceptions the pipeline/runtime caught (a bug, but contained)
    skipped_windows: int = 0  # windows whose model output was not finite
    fuzz_frames: int = 0
    fuzz_windows: int = 0
    rejected: dict = field(default_factory=dict)
    clean_windows: int = 0
    clean_windows_expected: int = 0
    clean_faults: int = 0
    alerts: int = 0
    alerts_invalid: int = 0
    queue_left: int = 0
    acked: int = 0
    max_decoder_buffer: int = 0
    rss_mb_after_warmup: float = 0.0
    rss_mb_end: float = 0.0

    def merge(self, o: "JobResult") -> None:
        for k, v in o.__dict__.items():
            cur = getattr(self, k)
            if k == "seconds" or k.startswith("rss") or k == "max_decoder_buffer":
                setattr(self, k, max(cur, v))
            elif isinstance(v, dict):
                for kk, vv in v.items():
                    cur[kk] = cur.get(kk, 0) + vv
            elif isinstance(v, list):
                cur.extend(v[: max(0, 5 - len(cur))])
            else:
                setattr(self, k, cur + v)


def fuzz_bundle() -> tuple[Any, Path]:
    import runtime_support as rs

    return rs.cached_bundle(3, 60.0, length=FUZZ_WINDOW, stride=FUZZ_STRIDE)


def run_job(streams: int, seed: int, broker_url: str | None, work: Path, gateway: str = "fuzz",
            progress: Callable[[int, JobResult], None] | None = None) -> JobResult:
    """Fuzz one in-process gateway with ``streams`` streams (see the module docstring).

    ``broker_url`` None: no broker (the state and alert JSON are still built, alerts
    committed to the queue and handed to paho, which holds them): the cost measured is
    the gateway's own.
    """
    import logging

    quiet = logging.getLogger("alanet")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # a million warnings about bad frames help no one
    try:
        return _run_job(streams, seed, broker_url, work, gateway, progress)
    finally:
        quiet.setLevel(level)


def _run_job(streams: int, seed: int, broker_url: str | None, work: Path, gateway: str,
             progress: Callable[[int, "JobResult"], None] | None) -> "JobResult":
    from dataclasses import replace

    from alanet.device.config import WearableConfig, load_config
    from alanet.device.runtime import Gateway

    sess, bundle = fuzz_bundle()
    cfg = load_config(None, {"port": "/dev/null", "bundle": str(bundle), "broker": broker_url or "mqtt://127.0.0.1:9",
                             "gateway": gateway,
                             "state_dir": str(work / f"state-{gateway}")})
    cfg = replace(cfg, wearables=(WearableConfig("w0", "/dev/null0"), WearableConfig("w1", "/dev/null1")))
    gw = Gateway(cfg)
    res = JobResult()
    rng = np.random.default_rng(seed)
    gen = Generator(rng, fs=gw.spec.sample_rate_hz, sess=sess)
    from alanet.firmware_bridge.codec import Encoder

    clean_enc = Encoder(device_id="clean")
    clean_i = 0
    if broker_url is not None:
        gw.link.start()
        gw.link.wait_connected(10)
    try:
        gw.process(1, b"\x00" + clean_enc.hello(0))
        w0 = gw.wearables[0]
        t0 = time.perf_counter()
        kinds = rng.choice(len(KINDS), size=streams)
        for s in range(streams):
            kind = KINDS[int(kinds[s])]
            st = gen.make(kind)
            res.by_kind[kind] = res.by_kind.get(kind, 0) + 1
            before = w0.pipeline.counters.frames
            for chunk in split_reads(rng, st.data):
                try:
                    gw.process(0, chunk)
                except Exception as exc:  # noqa: BLE001 - counted: the point of the fuzz
                    res.escaped += 1
                    if len(res.escaped_examples) < 5:
                        res.escaped_examples.append(f"{kind}: {type(exc).__name__}: {exc}")
            res.bytes += len(st.data)
            got = w0.pipeline.counters.frames - before
            if got > st.expect:
                res.corrupt_accepted += got - st.expect
                if len(res.mismatch_examples) < 5:
                    res.mismatch_examples.append(f"{kind}: accepted {got}, oracle {st.expect}: {st.data[:120].hex()}")
            elif st.exact and got < st.expect:
                res.valid_rejected += st.expect - got
                if len(res.mismatch_examples) < 5:
                    res.mismatch_examples.append(f"{kind}: accepted {got} of {st.expect}: {st.data[:120].hex()}")
            res.max_decoder_buffer = max(res.max_decoder_buffer, w0.decoder.buffered)
            # the other wearer goes on, a few clean frames per stream
            wire = b""
            for _ in range(CLEAN_FRAMES_PER_STREAM):
                k = clean_i % sess.n
                wire += clean_enc.frame(int(clean_i * 1000 / 60), sess.angles[k].tolist(), sess.emg[k].tolist(),
                                        seq=clean_i)
                clean_i += 1
            gw.process(1, wire)
            if s % 16 == 0:
                gw.link.poll()
            if s == min(1000, streams // 10):
                res.rss_mb_after_warmup = rss_mb()
            if progress is not None and s and s % 50000 == 0:
                progress(s, res)
        res.seconds = time.perf_counter() - t0
        res.streams = streams
        if broker_url is not None:
            gw.link.flush(10)
        res.rss_mb_end = rss_mb()
        p0, p1 = w0.pipeline.counters, gw.wearables[1].pipeline.counters
        res.caught_faults = w0.fault_count() - p0.skipped + gw.wearables[1].fault_count()
        res.skipped_windows = p0.skipped
        res.fuzz_frames, res.fuzz_windows = p0.frames, p0.windows
        res.rejected = {"no_hello": p0.no_hello, "refused": p0.refused, "bad_shape": p0.bad_shape,
                        "out_of_range": p0.out_of_range, "raw_rejected": p0.raw_rejected,
                        "crc_errors": w0.decoder.stats.crc_errors, "malformed": w0.decoder.stats.malformed,
                        "framing_errors": w0.decoder.stats.framing_errors}
        res.clean_windows = p1.windows
        res.clean_windows_expected = (clean_i - FUZZ_WINDOW) // FUZZ_STRIDE + 1 if clean_i >= FUZZ_WINDOW else 0
        res.clean_faults = gw.wearables[1].fault_count() + p1.skipped + p1.refused + p1.out_of_range + p1.bad_shape
        res.alerts = gw.alerts
        res.acked = gw.link.acked
        res.queue_left = len(gw.queue)
        res.alerts_invalid = check_queue(gw.queue)
    finally:
        gw.shutdown()
    return res


def check_queue(q: Any) -> int:
    """Queued alerts that are not strict JSON (NaN, inf) or break alert.schema.json."""
    import jsonschema

    schema = json.loads((REPO / "device" / "schemas" / "alert.schema.json").read_text())

    def no_constants(c: str) -> float:
        raise ValueError(f"non-finite {c}")

    bad = 0
    for a in q.pending():
        try:
            jsonschema.validate(json.loads(a.payload, parse_constant=no_constants), schema)
        except (ValueError, jsonschema.ValidationError):
            bad += 1
    return bad


def _job(args: tuple) -> dict:
    streams, seed, url, work, name = args
    return run_job(streams, seed, url, Path(work), name).__dict__


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1_000_000, help="streams in all (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="processes, each with its own gateway (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="20,000 streams")
    ap.add_argument("--broker", action="store_true",
                    help="publish to a real Mosquitto (acknowledged alerts leave the queue); default: no broker, "
                    "alerts stay queued, the cost is the gateway's own")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.streams < 1 or args.jobs < 1:
        ap.error("--streams and --jobs must be >= 1")
    streams = 20_000 if args.quick else args.streams
    from conftest import Mosquitto

    fuzz_bundle()  # build once before the jobs start
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="alanet-fuzz-", dir=shm if shm.is_dir() else None) as tmp:
        work = Path(tmp)
        broker = None
        if args.broker:
            (work / "broker").mkdir()
            broker = Mosquitto(work / "broker", persistence=False).start()
        try:
            per = [streams // args.jobs + (1 if j < streams % args.jobs else 0) for j in range(args.jobs)]
            jobs = [(n, args.seed * 1000 + j, broker.url if broker else None, str(work), f"fuzz{j}")
                    for j, n in enumerate(per)]
            t0 = time.perf_counter()
            if args.jobs == 1:
                parts = [_job(jobs[0])]
            else:
                import multiprocessing as mp

                with mp.get_context("spawn").Pool(args.jobs) as pool:
                    parts = pool.map(_job, jobs)
            wall = time.perf_counter() - t0
        finally:
            if broker is not None:
                broker.stop()
    total = JobResult()
    for p in parts:
        total.merge(JobResult(**p))
    rate = total.streams / wall
    ok = (total.escaped == 0 and total.corrupt_accepted == 0 and total.valid_rejected == 0
          and total.clean_windows == total.clean_windows_expected and total.clean_faults == 0
          and total.alerts_invalid == 0 and total.caught_faults == 0)
    how = (f"{total.streams:,} streams ({', '.join(f'{k} {v:,}' for k, v in sorted(total.by_kind.items()))}) through "
           f"{args.jobs} in-process gateway(s) (decoder → pipeline → LiteRT → decisions → state/alert JSON → SQLite "
           f"queue{' → Mosquitto' if args.broker else ', no broker'}), generation included")
    figs = [
        Figure("fuzz.streams", "Gateway fuzz: streams", total.streams, "streams", how, ""),
        Figure("fuzz.streams_per_s", "Gateway fuzz: streams/s", round(rate), "streams/s",
               how + f"; {args.jobs} process(es) on {os.cpu_count()} CPUs", "higher"),
        Figure("fuzz.escaped", "Gateway fuzz: exceptions escaping Gateway.process", total.escaped, "", how, ""),
        Figure("fuzz.corrupt_accepted", "Gateway fuzz: corrupt frames accepted", total.corrupt_accepted, "frames",
               "frames the pipeline accepted beyond what the protocol's rules allow", ""),
        Figure("fuzz.valid_rejected", "Gateway fuzz: valid frames rejected", total.valid_rejected, "frames",
               "valid frames of undamaged streams the pipeline did not accept", ""),
        Figure("fuzz.clean_wearer_windows_missed", "Gateway fuzz: windows the clean wearer missed",
               total.clean_windows_expected - total.clean_windows, "windows",
               "windows owed to the clean wearer beside the fuzzed one, minus those classified", ""),
        Figure("fuzz.rss_mb", "Gateway fuzz: RSS at the end (per job)", round(total.rss_mb_end, 1), "MB",
               f"VmRSS of a fuzzing process; {round(total.rss_mb_after_warmup, 1)} MB after the first 1,000 streams",
               "lower"),
    ]
    data = {"ok": ok, "wall_s": round(wall, 1), "jobs": args.jobs, "seed": args.seed, "broker": args.broker,
            "result": total.__dict__}
    write_result("gateway_fuzz", data, figs, args.out)
    print(f"gateway fuzz: {total.streams:,} streams in {wall:.0f} s ({rate:,.0f} streams/s, {args.jobs} job(s)); "
          f"escaped {total.escaped}, corrupt accepted {total.corrupt_accepted}, valid rejected {total.valid_rejected}, "
          f"caught faults {total.caught_faults}, skipped windows {total.skipped_windows}; clean wearer "
          f"{total.clean_windows}/{total.clean_windows_expected} windows, {total.clean_faults} faults; "
          f"alerts {total.alerts} ({total.alerts_invalid} invalid, {total.queue_left} left queued); "
          f"RSS {total.rss_mb_after_warmup:.0f} → {total.rss_mb_end:.0f} MB; {'OK' if ok else 'FAILED'}")
    for e in total.escaped_examples + total.mismatch_examples:
        print("  ", e[:300])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
