"""Firmware simulator: plays a session over a serial port as the wearable would.

A session is an EmoPain-format array ``BD[T, 33]`` at 60 Hz (columns 1-13 angles,
27-30 sEMG envelopes, 33 protective behaviour; see DESIGN.md) or a file holding one
(``.mat`` with variable ``BD``, ``.npy``, ``.csv``). Without a session, a synthetic
one comes from ``alanet.train.data.synthetic.synth_session``.

Frames go out at the session's frame rate times ``speed`` and never faster than the
line rate (baud / 10 bytes per second, times ``speed``). ``duration`` is session time.
A HELLO goes out at the start, after every reconnect and every ``hello_every_s``
session seconds. Every connection starts with one 0x00 so a receiver drops any
partial packet it still holds.

Fault injection (``faults``), comma-separated ``key=value``:

- ``noise=P``      with probability P before each packet, a burst of 1-16 random bytes
- ``bitflip=P``    each byte on the wire has one random bit flipped with probability P
- ``drop=P``       each frame is skipped (never sent) with probability P
- ``disconnect=T`` every T session seconds the device is unplugged ...
- ``down=D``       ... for D session seconds (default 1); frames due meanwhile are lost

The truth (``truth()`` / ``--truth FILE``) records the protective episodes in session
seconds, the seq -> time mapping (``t = seq / sample_rate_hz``) and, per fault kind, the
sequence numbers of the frames it destroyed. In binary mode a frame is counted lost
when any byte of it or of its delimiters was damaged, which the CRC catches (an
undetected corruption has probability 2**-16 per damaged packet at most); in CSV
mode there is no checksum, so a bit flip may also yield a wrong but accepted value.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alanet.firmware_bridge import codec, csv_mode
from alanet.firmware_bridge.protocol import (
    DEFAULT_LAYOUT,
    MAX_RAW_SAMPLES,
    N_ANGLES,
    N_EMG,
    PROTOCOL_VERSION,
    EXERCISES,
    Frame,
    Hello,
)
from alanet.firmware_bridge.virtual_port import ExistingPort, VirtualPort

log = logging.getLogger(__name__)

ANGLE_COLS = slice(0, 13)
EMG_COLS = slice(26, 30)
EXERCISE_COL = 30  # EmoPain exercise type (0 other, 1 one-leg stand, ... 8 walking)
PROTECTIVE_COL = 32


@dataclass(frozen=True)
class FaultSpec:
    """Parsed ``--faults`` (see the module docstring for the meaning of each field)."""

    noise: float = 0.0
    bitflip: float = 0.0
    drop: float = 0.0
    disconnect: float = 0.0
    down: float = 1.0

    @property
    def any(self) -> bool:
        return bool(self.noise or self.bitflip or self.drop or self.disconnect)

    def __str__(self) -> str:
        return ",".join(f"{k}={getattr(self, k):g}" for k in ("noise", "bitflip", "drop", "disconnect", "down"))


def parse_faults(spec: str | FaultSpec | None) -> FaultSpec:
    """``"noise=0.01,bitflip=0.001,drop=0.01,disconnect=30,down=1"`` -> ``FaultSpec``.

    Raises ``ValueError`` naming the bad item.
    """
    if spec is None or isinstance(spec, FaultSpec):
        return spec or FaultSpec()
    values: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or key not in FaultSpec.__dataclass_fields__:
            raise ValueError(f"faults: {item!r}: expected KEY=VALUE with KEY one of noise, bitflip, drop, disconnect, down")
        try:
            x = float(val)
        except ValueError:
            raise ValueError(f"faults: {item!r}: {val!r} is not a number") from None
        if not math.isfinite(x) or x < 0 or (key in ("noise", "bitflip", "drop") and x > 1):
            raise ValueError(f"faults: {item!r}: probabilities must be in [0, 1], times >= 0")
        values[key] = x
    return FaultSpec(**values)


def load_session(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a session array ``[T, >=30]`` (EmoPain BD layout) from .mat / .npy / .csv."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such session file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif suffix == ".mat":
        from scipy.io import loadmat

        mat = loadmat(p)
        if "BD" not in mat:
            raise ValueError(f"{p}: no variable 'BD' (EmoPain format)")
        arr = mat["BD"]
    else:
        arr = np.loadtxt(p, delimiter=",", ndmin=2)
    return check_session(arr, str(p))


def check_session(arr: Any, what: str = "session") -> np.ndarray:
    """Validate a session array: 2-D, at least 30 columns, finite angles and sEMG."""
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 30 or a.shape[0] < 1:
        raise ValueError(f"{what}: expected a [T, 33] EmoPain array, got shape {a.shape}")
    for name, cols in (("angle", ANGLE_COLS), ("sEMG", EMG_COLS)):
        bad = np.argwhere(~np.isfinite(a[:, cols]))
        if bad.size:
            r, c = bad[0]
            raise ValueError(f"{what}: {name} column {c + cols.start + 1} row {r + 1}: not finite")
        big = np.argwhere(np.abs(a[:, cols]) > 3.4e38)
        if big.size:
            r, c = big[0]
            raise ValueError(f"{what}: {name} column {c + cols.start + 1} row {r + 1}: out of float32 range")
    return a


def protective_episodes(labels: np.ndarray, fs: float) -> list[dict[str, float]]:
    """Runs of ``labels == 1`` as ``[{"t_start", "t_end"}]`` in seconds (``t_end`` exclusive)."""
    on = np.asarray(labels) == 1
    edges = np.flatnonzero(np.diff(np.concatenate(([0], on.astype(np.int8), [0]))))
    return [{"t_start": float(s / fs), "t_end": float(e / fs)} for s, e in zip(edges[::2], edges[1::2])]


@dataclass
class FaultLog:
    """What the simulator injected; sequence numbers of the frames each fault destroyed."""

    dropped: list[int] = field(default_factory=list)
    corrupted: list[int] = field(default_factory=list)
    disconnected: list[int] = field(default_factory=list)
    unsent: list[int] = field(default_factory=list)
    noise_bursts: int = 0
    noise_bytes: int = 0
    bitflips: int = 0
    disconnects: int = 0
    hellos_sent: int = 0
    hellos_damaged: int = 0
    unread_at_unplug: int = 0
    raw_blocks: int = 0
    raw_lost: list[int] = field(default_factory=list)

    @property
    def lost(self) -> list[int]:
        return sorted({*self.dropped, *self.corrupted, *self.disconnected, *self.unsent})


class Simulator:
    """Plays a session on a port. Use ``open()`` then ``run()``, or ``start()`` for a thread.

    ``port=None`` creates a pty pair; ``path`` is what a gateway opens. ``wait_for_reader``
    (default: on for an own pty) holds the stream until a reader has opened the port,
    at the start and after each replug, so no frame is written into the void.
    """

    def __init__(
        self,
        session: np.ndarray | str | os.PathLike[str] | None = None,
        *,
        port: str | None = None,
        baud: int = 115200,
        sample_rate_hz: float = 60.0,
        duration: float | None = None,
        speed: float = 1.0,
        faults: str | FaultSpec | None = None,
        seed: int = 0,
        mode: str = "binary",
        device_id: str = "alanet-sim",
        firmware: str = "sim-1.0",
        hello_every_s: float = 5.0,
        raw_emg_rate_hz: float = 0.0,
        send_exercise: bool = False,
        wait_for_reader: bool | None = None,
        reader_timeout_s: float = 30.0,
        write_timeout_s: float = 5.0,
    ) -> None:
        if mode not in ("binary", "csv"):
            raise ValueError(f"mode must be 'binary' or 'csv', got {mode!r}")
        if not (speed > 0 and math.isfinite(speed)):
            raise ValueError(f"speed must be > 0, got {speed}")
        if not (math.isfinite(raw_emg_rate_hz) and raw_emg_rate_hz >= 0):
            raise ValueError(f"raw_emg_rate_hz must be >= 0, got {raw_emg_rate_hz}")
        if raw_emg_rate_hz and mode == "csv":
            raise ValueError("RAW_EMG needs binary mode (CSV mode carries envelopes only)")
        if send_exercise and mode == "csv":
            raise ValueError("EXERCISE packets need binary mode")
        if duration is not None and not duration > 0:
            raise ValueError(f"duration must be > 0 seconds, got {duration}")
        self.fs = float(sample_rate_hz)
        self.speed = float(speed)
        self.faults = parse_faults(faults)
        self.seed = seed
        self.mode = mode
        self.baud = baud
        self.port_url = port
        self.hello_every_s = hello_every_s
        self.wait_for_reader = (port is None) if wait_for_reader is None else wait_for_reader
        self.reader_timeout_s = reader_timeout_s
        self.write_timeout_s = write_timeout_s
        self.send_exercise = bool(send_exercise)  # EXERCISE packets from the session's exercise column
        self.raw_rate = float(raw_emg_rate_hz)
        self.raw_block = min(MAX_RAW_SAMPLES, max(1, int(self.raw_rate // 20)))  # ~50 ms blocks
        self.encoder = codec.Encoder(device_id, firmware=firmware, sample_rate_hz=self.fs, raw_emg_rate_hz=self.raw_rate)
        self.session = self._resolve_session(session, duration, seed)
        if self.send_exercise and self.session.shape[1] <= EXERCISE_COL:
            raise ValueError(f"send_exercise: the session has no exercise column (column {EXERCISE_COL + 1})")
        n = self.session.shape[0]
        if duration is not None:
            n = min(n, int(round(duration * self.fs)))
        self.n_frames = n
        self.log = FaultLog()
        self.frames_sent = 0
        self.bytes_sent = 0
        self._rng = np.random.default_rng(seed)
        self._raw_rng = np.random.default_rng([seed, 1])
        self._raw_k = 0  # next raw sample index
        self._stalled = False
        self._port: VirtualPort | ExistingPort | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None

    # -- setup

    def _resolve_session(self, session: Any, duration: float | None, seed: int) -> np.ndarray:
        if session is None:
            from alanet.train.data.synthetic import synth_session  # lazy: only when synthesising

            return check_session(synth_session(seed=seed, duration_s=duration or 300.0, patient=True, pain_level=1), "synthetic session")
        if isinstance(session, (str, os.PathLike)):
            return load_session(session)
        return check_session(session)

    def open(self) -> "Simulator":
        """Create the pty (or open ``port``); after this ``path`` is valid."""
        if self._port is None:
            self._port = VirtualPort() if self.port_url is None else ExistingPort(self.port_url, self.baud)
        return self

    @property
    def path(self) -> str:
        """The port a gateway should open (a stable symlink to the pty slave for an own pty)."""
        return self.open()._port.path  # type: ignore[union-attr]

    # -- running

    def start(self) -> "Simulator":
        """Run in a daemon thread; ``done`` is set when it finishes."""
        self.open()
        self._thread = threading.Thread(target=self._run_guarded, name="alanet-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def close(self) -> None:
        self.stop()
        if self._port is not None:
            self._port.close()
            self._port = None

    def __enter__(self) -> "Simulator":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # surfaced to the caller through .error
            self.error = exc
            log.exception("simulator failed")

    def run(self) -> dict[str, Any]:
        """Play the whole session (blocking); return the truth."""
        self.open()
        port = self._port
        assert port is not None
        try:
            self._play(port)
        finally:
            self.done.set()
        return self.truth()

    def _connect(self, port: VirtualPort | ExistingPort, t_ms: int) -> None:
        if self.wait_for_reader and not port.wait_reader(self.reader_timeout_s, cancel=self._stop):
            if self._stop.is_set():
                return
            log.warning("simulator: nobody read %s within %.0f s; sending anyway", port.path, self.reader_timeout_s)
        self._send_hello(port, t_ms, lead=b"\x00")

    def _send_hello(self, port: VirtualPort | ExistingPort, t_ms: int, lead: bytes = b"") -> None:
        if self.mode == "csv":
            lead = lead.replace(b"\x00", b"\n")
        self.log.hellos_sent += 1
        self._write(port, lead + self._hello_wire(t_ms))

    def _write(self, port: VirtualPort | ExistingPort, wire: bytes) -> int:
        # Once a write has timed out (nobody reads), do not wait a full timeout per packet.
        n = port.write(wire, 0.05 if self._stalled else self.write_timeout_s)
        self.bytes_sent += n
        if n < len(wire) and not self._stalled:
            log.warning("simulator: nobody reads %s; data is being lost", port.path)
        self._stalled = n < len(wire)
        return n

    def _play(self, port: VirtualPort | ExistingPort) -> None:
        fs, speed = self.fs, self.speed
        line_bps = self.baud / 10.0 * speed  # 8N1: 10 bits per byte
        f = self.faults
        delim = b"\n" if self.mode == "csv" else b"\x00"
        next_disc = f.disconnect if f.disconnect > 0 else math.inf
        next_hello = self.hello_every_s if self.hello_every_s > 0 else math.inf
        self._connect(port, 0)
        t0 = time.monotonic()  # wall time of session time 0 (shifted after pauses)
        line_free = t0
        prev_delim_ok = True
        batch: list[bytes] = []
        batch_seqs: list[int] = []
        batch_due = 0.0
        batch_bytes = 0

        def flush() -> None:
            nonlocal line_free, batch_bytes
            if not batch:
                return
            wire = b"".join(batch)
            now = time.monotonic()
            start = max(now, line_free, batch_due)
            if start > now:
                self._stop.wait(start - now)
            written = self._write(port, wire)
            line_free = max(start, time.monotonic()) + len(wire) / line_bps
            if written < len(wire):  # the reader stalled: whatever did not go out is lost
                self.log.unsent.extend(batch_seqs)
            else:
                self.frames_sent += len(batch_seqs)
            batch.clear()
            batch_seqs.clear()
            batch_bytes = 0

        def raw_upto(end_s: float, send: bool) -> None:
            """Raw sEMG blocks that end by session time ``end_s``: sent, or lost while unplugged."""
            nonlocal prev_delim_ok, batch_bytes
            while self.raw_rate and (self._raw_k + self.raw_block) / self.raw_rate <= end_s + 1e-9:
                rseq = self.log.raw_blocks
                self.log.raw_blocks += 1
                k0 = self._raw_k
                self._raw_k += self.raw_block
                if not send:
                    self.log.raw_lost.append(rseq)
                    continue
                wire = codec.encode_raw_emg(rseq, int(round(k0 * 1000.0 / self.raw_rate)), self.raw_rate, self._raw_samples(k0))
                wire, prev_delim_ok, intact = self._damage(wire, delim, prev_delim_ok)
                if not intact:
                    self.log.raw_lost.append(rseq)
                batch.append(wire)
                batch_bytes += len(wire)

        seq = 0
        exercise = -1  # the code last sent (-1: none yet, or re-send with the next HELLO)
        while seq < self.n_frames and not self._stop.is_set():
            t_s = seq / fs
            t_ms = int(round(seq * 1000.0 / fs))
            if t_s >= next_disc:
                flush()
                self.log.unread_at_unplug += port.wait_drained(self.write_timeout_s, self._stop)
                port.unplug()
                self.log.disconnects += 1
                end = t_s + f.down
                log.info("simulator: unplugged at %.2f s for %.2f s", t_s, f.down)
                while seq < self.n_frames and seq / fs < end:
                    self.log.disconnected.append(seq)
                    seq += 1
                    raw_upto(seq / fs, send=False)
                self._stop.wait(f.down / speed)
                next_disc += f.disconnect * max(1, math.ceil((end - next_disc) / f.disconnect + 1e-9))
                port.replug()
                self._connect(port, int(round(seq * 1000.0 / fs)))
                t0 = time.monotonic() - (seq / fs) / speed
                line_free = time.monotonic()
                prev_delim_ok = True
                continue
            if t_s >= next_hello:
                next_hello += self.hello_every_s
                hello = self._damage(self._hello_wire(t_ms), delim, prev_delim_ok)
                prev_delim_ok = hello[1]
                if not hello[2]:
                    self.log.hellos_damaged += 1
                self.log.hellos_sent += 1
                batch.append(hello[0])
                batch_bytes += len(hello[0])
                exercise = -1  # repeated with every HELLO (a late gateway learns it within 5 s)
            due = t0 + t_s / speed
            if batch_seqs and due > batch_due + 0.005:
                flush()
            if not batch_seqs:
                batch_due = due
            if f.drop and self._rng.random() < f.drop:
                self.log.dropped.append(seq)
                seq += 1
                raw_upto(seq / fs, send=True)
                continue
            v = self.session[seq, EXERCISE_COL] if self.send_exercise else -1.0
            code = int(v) if math.isfinite(v) else -1
            if code != exercise and 0 <= code < len(EXERCISES):
                exercise = code
                batch.append(self.encoder.exercise(t_ms, code))
                batch_bytes += len(batch[-1])
            frame = Frame(seq, t_ms, tuple(self.session[seq, ANGLE_COLS]), tuple(self.session[seq, EMG_COLS]))
            wire = csv_mode.format_frame(frame) if self.mode == "csv" else codec.encode_frame(frame)
            wire, prev_delim_ok, intact = self._damage(wire, delim, prev_delim_ok)
            if not intact:
                self.log.corrupted.append(seq)
            batch.append(wire)
            batch_seqs.append(seq)
            batch_bytes += len(wire)
            seq += 1
            raw_upto(seq / fs, send=True)
            if batch_bytes > 16384:
                flush()
        flush()
        port.wait_drained(self.write_timeout_s, self._stop)
        self.log.unsent.sort()

    def _raw_samples(self, k0: int) -> list[list[float]]:
        """Raw sEMG whose rectified low-passed envelope is the session's envelope.

        For zero-mean Gaussian noise of std s, E|x| = s * sqrt(2 / pi).
        """
        idx = np.minimum(((k0 + np.arange(self.raw_block)) * self.fs / self.raw_rate).astype(int), self.n_frames - 1)
        env = self.session[idx, EMG_COLS]
        return (env * math.sqrt(math.pi / 2) * self._raw_rng.standard_normal(env.shape)).tolist()

    def _hello_wire(self, t_ms: int) -> bytes:
        if self.mode == "csv":
            h = Hello(0, t_ms, self.encoder.device_id, self.encoder.firmware, PROTOCOL_VERSION, N_ANGLES, N_EMG,
                      self.fs, 0.0, DEFAULT_LAYOUT)  # fmt: skip
            return csv_mode.format_hello(h)
        return self.encoder.hello(t_ms)

    def _damage(self, wire: bytes, delim: bytes, prev_delim_ok: bool) -> tuple[bytes, bool, bool]:
        """Apply noise and bit flips to one packet (``wire`` ends with its delimiter).

        Returns (bytes to send, whether its delimiter survived, whether the packet
        arrives intact: clean body, clean delimiter and a clean delimiter before it).
        """
        f, rng = self.faults, self._rng
        lead = b""
        if f.noise and rng.random() < f.noise:
            lead = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
            self.log.noise_bursts += 1
            self.log.noise_bytes += len(lead)
            prev_delim_ok = lead[-1:] == delim
        body_ok = delim_ok = True
        if f.bitflip:
            k = int(rng.binomial(len(wire), f.bitflip))
            if k:
                buf = bytearray(wire)
                for pos in rng.choice(len(wire), size=k, replace=False):
                    buf[pos] ^= 1 << int(rng.integers(0, 8))
                    if pos == len(wire) - 1:
                        delim_ok = False
                    else:
                        body_ok = False
                self.log.bitflips += k
                wire = bytes(buf)
        return lead + wire, delim_ok, prev_delim_ok and body_ok and delim_ok

    # -- truth

    def truth(self) -> dict[str, Any]:
        """Ground truth for scoring a gateway on this run (JSON-serialisable)."""
        labels = self.session[: self.n_frames, PROTECTIVE_COL] if self.session.shape[1] > PROTECTIVE_COL else np.zeros(0)
        lost = self.log.lost
        return {
            "format": "alanet-sim-truth/1",
            "sample_rate_hz": self.fs,
            "frames": self.n_frames,
            "duration_s": self.n_frames / self.fs,
            "seq_time": "t_s = seq / sample_rate_hz; t_ms = round(seq * 1000 / sample_rate_hz)",
            "mode": self.mode,
            "speed": self.speed,
            "seed": self.seed,
            "protective_episodes": protective_episodes(labels, self.fs),
            "faults": {
                "spec": str(self.faults),
                "dropped": self.log.dropped,
                "corrupted": self.log.corrupted,
                "disconnected": self.log.disconnected,
                "unsent": self.log.unsent,
                "lost": lost,
                "noise_bursts": self.log.noise_bursts,
                "noise_bytes": self.log.noise_bytes,
                "bitflips": self.log.bitflips,
                "disconnects": self.log.disconnects,
                "hellos_sent": self.log.hellos_sent,
                "hellos_damaged": self.log.hellos_damaged,
                "unread_at_unplug": self.log.unread_at_unplug,
            },
            "frames_expected": self.n_frames - len(lost),
            "raw_emg": {
                "rate_hz": self.raw_rate,
                "block_samples": self.raw_block if self.raw_rate else 0,
                "blocks": self.log.raw_blocks,
                "lost": sorted(self.log.raw_lost),
            },
        }

    def write_truth(self, path: str | os.PathLike[str]) -> None:
        from alanet.atomic import write_text

        write_text(path, json.dumps(self.truth(), indent=1) + "\n")


def cmd_simulate(args: Any) -> int:
    """``alanet simulate``: play a session on a port until done or Ctrl-C."""
    import sys

    from alanet.errors import InputError

    try:
        sim = Simulator(
            args.session, port=args.port, baud=args.baud, duration=args.duration, speed=args.speed,
            faults=args.faults, seed=args.seed, mode=args.mode, device_id=args.device_id,
            raw_emg_rate_hz=args.raw_emg_rate, send_exercise=args.send_exercise,
            wait_for_reader=False if args.no_wait else None,
            reader_timeout_s=24 * 3600.0,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as exc:
        raise InputError(str(exc)) from None
    except ImportError as exc:
        raise InputError(f"no --session given and the synthetic generator is unavailable: {exc}") from None
    try:
        sim.open()
    except Exception as exc:  # unopenable --port
        raise InputError(f"cannot open port {args.port!r}: {exc}") from None
    print(sim.path, flush=True)
    print(
        f"simulating {sim.n_frames} frames ({sim.n_frames / sim.fs:.1f} s at {sim.fs:g} Hz, x{sim.speed:g}, "
        f"{args.mode}, faults: {sim.faults if sim.faults.any else 'none'}) on {sim.path}",
        file=sys.stderr,
        flush=True,
    )
    interrupted = False
    try:
        sim.run()
    except KeyboardInterrupt:
        interrupted = True
        sim.stop()
        print("interrupted", file=sys.stderr)
    finally:
        if args.truth:
            sim.write_truth(args.truth)
        sim.close()
    t = sim.truth()["faults"]
    print(f"sent {sim.frames_sent} frames, {sim.bytes_sent} bytes; lost by injected faults: {len(t['lost'])}", file=sys.stderr)
    return 130 if interrupted else 0
