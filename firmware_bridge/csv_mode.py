"""CSV mode: one frame per text line, as an Arduino sketch prints it (sans-I/O).

Line format (ASCII, fields separated by ``,``, line ends ``\\n``; a ``\\r`` before it is ignored)::

    seq,t_ms,a1,...,a13,e1,...,e4

``seq`` and ``t_ms`` are unsigned decimal integers (uint32, wrap like the binary
protocol); the 17 values are decimal floats (angles in rad, sEMG envelopes in a.u.),
rounded to float32 like the binary protocol (so ``%.9g`` text round-trips exactly).
A line ``#hello,device_id,firmware,protocol_version,n_angles,n_emg,sample_rate_hz,raw_emg_rate_hz,layout``
announces the device like a binary HELLO. Any other line starting with ``#``, and
empty lines, are ignored. Anything else that does not parse is counted as
``malformed`` and dropped; lines longer than ``max_line`` bytes are dropped whole.
"""

from __future__ import annotations

import math
import struct

from alanet.firmware_bridge.codec import DecoderStats, SeqTracker
from alanet.firmware_bridge.framing import DelimitedBuffer
from alanet.firmware_bridge.protocol import N_ANGLES, N_EMG, SEQ_MOD, T_MS_MOD, Frame, Hello, Packet

MAX_LINE = 512
_F32X17 = struct.Struct(f"<{N_ANGLES + N_EMG}f")
_F32_MAX = 3.4028234663852886e38
N_FIELDS = 2 + N_ANGLES + N_EMG


def format_frame(frame: Frame, fmt: str = "%.6g") -> bytes:
    """One CSV line (with ``\\n``) for ``frame``."""
    vals = ",".join(fmt % v for v in (*frame.angles, *frame.emg))
    return f"{frame.seq % SEQ_MOD},{frame.t_ms % T_MS_MOD},{vals}\n".encode("ascii")


def format_hello(hello: Hello) -> bytes:
    """The ``#hello`` line for ``hello`` (commas are not allowed inside its strings)."""
    fields = (hello.device_id, hello.firmware, str(hello.protocol_version), str(hello.n_angles), str(hello.n_emg),
              f"{hello.sample_rate_hz:g}", f"{hello.raw_emg_rate_hz:g}", hello.layout)  # fmt: skip
    if any("," in f or "\n" in f for f in fields):
        raise ValueError("HELLO strings must not contain ',' or newlines in CSV mode")
    return ("#hello," + ",".join(fields) + "\n").encode("utf-8")


class CsvDecoder:
    """``feed(bytes) -> [Frame | Hello]`` for CSV mode; never raises, bounded buffer."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.stats = DecoderStats()
        self._framer = DelimitedBuffer(b"\n", max_line)
        self._seq = SeqTracker()
        self.last_hello: Hello | None = None

    @property
    def buffered(self) -> int:
        return self._framer.buffered

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        try:
            data = bytes(data)
        except Exception:
            return []
        self.stats.bytes += len(data)
        lines, overflows = self._framer.split(data)
        for _ in range(overflows):
            self._bad("framing_errors")
        out: list[Packet] = []
        for line in lines:
            pkt = self._line(line)
            if pkt is not None:
                out.append(pkt)
        s, t = self.stats, self._seq
        s.gaps, s.lost, s.duplicates, s.restarts = t.gaps, t.lost, t.duplicates, t.restarts
        return out

    def _bad(self, counter: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self.stats.resyncs += 1

    def _line(self, raw: bytes) -> Packet | None:
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            if raw.startswith(b"#hello,"):
                return self._hello_line(raw)
            self._bad("malformed")
            return None
        if not line:
            return None
        if line.startswith("#"):
            return self._hello_line(raw) if line.startswith("#hello,") else None
        parts = line.split(",")
        if len(parts) != N_FIELDS:
            self._bad("malformed")
            return None
        try:
            if not (parts[0].isdigit() and parts[1].isdigit()):
                raise ValueError("seq/t_ms")
            seq, t_ms = int(parts[0]), int(parts[1])
            if seq >= SEQ_MOD or t_ms >= T_MS_MOD:
                raise ValueError("range")
            values = tuple(float(p) for p in parts[2:])
        except ValueError:
            self._bad("malformed")
            return None
        if not all(math.isfinite(v) and abs(v) <= _F32_MAX for v in values):
            self._bad("malformed")
            return None
        values = _F32X17.unpack(_F32X17.pack(*values))  # float32, as on the binary wire
        if not self._seq.check(seq):
            return None
        self.stats.packets += 1
        self.stats.frames += 1
        return Frame(seq, t_ms, values[:N_ANGLES], values[N_ANGLES:])

    def _hello_line(self, raw: bytes) -> Hello | None:
        try:
            f = raw.decode("utf-8").strip().split(",")
            if len(f) != 9:
                raise ValueError("fields")
            fs, raw_fs = float(f[6]), float(f[7])
            if not (math.isfinite(fs) and math.isfinite(raw_fs)):
                raise ValueError("rate")
            hello = Hello(0, 0, f[1], f[2], int(f[3]), int(f[4]), int(f[5]), fs, raw_fs, f[8])
        except (UnicodeDecodeError, ValueError):
            self._bad("malformed")
            return None
        self.stats.packets += 1
        self.stats.hellos += 1
        self.last_hello = hello
        return hello
