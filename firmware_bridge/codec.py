"""Sans-I/O codec for protocol v1: ``Decoder.feed(bytes) -> packets`` and the encoders.

The decoder is a pure object: no ports, no threads, no clocks. It never raises on
any input, keeps at most one partial packet (bounded by ``max_packet``), never
rescans bytes it has already searched for a delimiter, and resynchronises at the
next 0x00 after any damage. Everything it throws away is counted in ``stats``.
"""

from __future__ import annotations

import binascii
import itertools
import math
import struct
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from alanet.firmware_bridge import cobs
from alanet.firmware_bridge.framing import DelimitedBuffer
from alanet.firmware_bridge.protocol import (
    CRC_SIZE,
    DATA_HEAD,
    DEFAULT_LAYOUT,
    EXERCISE_NONE,
    EXERCISE_PAYLOAD,
    EXERCISES,
    HEADER,
    HEADER_SIZE,
    HELLO_FIXED,
    HELLO_MAX_STR,
    MAX_ABS_ANGLE_RAD,
    MAX_ABS_EMG,
    MAX_PACKET,
    MAX_RAW_SAMPLES,
    MIN_PACKET,
    N_ANGLES,
    N_EMG,
    PROTOCOL_VERSION,
    RAW_HEAD,
    SEQ_MOD,
    T_MS_MOD,
    TYPE_DATA,
    TYPE_HELLO,
    TYPE_EXERCISE,
    TYPE_RAW_EMG,
    Exercise,
    Frame,
    FrameBlock,
    Hello,
    Packet,
    RawEmg,
    add_row,
    block_in_bounds,
    frame_blocks,
)

_CRC = struct.Struct("<H")
#: Reads completing fewer packets than this are decoded one packet at a time (a batch's fixed cost is not worth it).
#: Measured as the runtime's own work per window (decoder and block pipeline, bench/hotpath.py's A/B) at
#: 10 · 12 frames per read: 0.305 · 0.296 ms one packet at a time, 0.318 · 0.291 ms as one whole read.
BATCH_MIN = 12
# The vetting below first tests every value against the angles' bound alone: that needs it to be the smaller one.
assert MAX_ABS_ANGLE_RAD <= MAX_ABS_EMG


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0)."""
    return binascii.crc_hqx(data, 0xFFFF)


# --------------------------------------------------------------------------- stats


@dataclass(slots=True)
class DecoderStats:
    """Counters of one decoder (or CSV decoder). All start at 0 and only grow.

    - ``bytes``: bytes fed; ``packets``: packets accepted (any type).
    - ``frames`` / ``hellos`` / ``raw_blocks`` / ``exercises``: accepted packets per type.
    - ``framing_errors``: delimited chunks that were not valid COBS, were shorter than a
      header + CRC, or overflowed ``max_packet`` before a delimiter came.
    - ``crc_errors``: chunks whose CRC did not match.
    - ``malformed``: CRC correct but the payload is inconsistent (lengths, UTF-8,
      non-finite numbers) -- a firmware bug, not line noise.
    - ``unsupported``: CRC correct but unknown protocol version or packet type.
    - ``resyncs``: times bytes were thrown away and decoding restarted at the next 0x00
      (the sum of the four counters above).
    - ``gaps``: DATA sequence jumps; ``lost``: frames missing inside those jumps.
    - ``duplicates``: DATA frames whose seq equals the previous one (dropped).
    - ``restarts``: DATA seq went backwards (device reboot); counting starts again.
    - ``raw_gaps`` / ``raw_lost`` / ``raw_duplicates``: the same for RAW_EMG blocks.
    """

    bytes: int = 0
    packets: int = 0
    frames: int = 0
    hellos: int = 0
    raw_blocks: int = 0
    exercises: int = 0
    framing_errors: int = 0
    crc_errors: int = 0
    malformed: int = 0
    unsupported: int = 0
    resyncs: int = 0
    gaps: int = 0
    lost: int = 0
    duplicates: int = 0
    restarts: int = 0
    raw_gaps: int = 0
    raw_lost: int = 0
    raw_duplicates: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SeqTracker:
    """Sequence-gap accounting for a uint32 counter that wraps modulo 2**32.

    ``check(seq)`` returns ``False`` for a duplicate (drop it) and ``True`` otherwise.
    A forward step d (mod 2**32) with 1 < d < 2**31 is a gap of d - 1 lost items;
    a step of 2**31 or more is taken as a backwards jump: the device restarted.
    """

    __slots__ = ("last", "gaps", "lost", "duplicates", "restarts", "changed")

    def __init__(self) -> None:
        self.last: int | None = None
        self.gaps = self.lost = self.duplicates = self.restarts = 0
        self.changed = False  # a counter moved since the flag was last cleared

    def check(self, seq: int) -> bool:
        last = self.last
        if last is not None:
            d = (seq - last) % SEQ_MOD
            if d == 0:
                self.duplicates += 1
                self.changed = True
                return False
            if d >= SEQ_MOD // 2:
                self.restarts += 1
                self.changed = True
            elif d > 1:
                self.gaps += 1
                self.lost += d - 1
                self.changed = True
        self.last = seq
        return True


@dataclass(frozen=True)
class _BatchLayout:
    """How the batch path reads whole DATA packets of one channel layout (before COBS)."""

    size: int  # packet length
    head: bytes  # the payload's n_angles, n_emg bytes
    emg_at: int  # index of the first sEMG value in a ``row`` tuple
    dtype: np.dtype  # numpy view of a packet (checks on all packets at once)
    row: struct.Struct  # the packet's seq, t_ms and values as one tuple (``iter_unpack``)
    vt: int  # version | type << 8 of such a packet
    nn: int  # n_angles | n_emg << 8
    vth: bytes  # version, type, n_angles, n_emg bytes of such a packet

    @classmethod
    def of(cls, n_angles: int, n_emg: int) -> "_BatchLayout":
        n = n_angles + n_emg
        # "vt": version and type as one little-endian u2; "nn": n_angles and n_emg likewise
        dtype = np.dtype([("vt", "<u2"), ("seq", "<u4"), ("t", "<u4"), ("nn", "<u2"), ("v", "<f4", (n,)),
                          ("crc", "<u2")])
        row = struct.Struct(f"<2xII2x{n}f2x")  # seq, t_ms, the values
        assert row.size == dtype.itemsize == HEADER_SIZE + DATA_HEAD.size + 4 * n + CRC_SIZE
        return cls(row.size, bytes((n_angles, n_emg)), 2 + n_angles, dtype, row,
                   PROTOCOL_VERSION | TYPE_DATA << 8, n_angles | n_emg << 8,
                   bytes((PROTOCOL_VERSION, TYPE_DATA, n_angles, n_emg)))

    @property
    def n_angles(self) -> int:
        return self.head[0]

    @property
    def n_emg(self) -> int:
        return self.head[1]

    @property
    def vettable(self) -> bool:
        """Whether blocks of this layout may be vetted: the pipeline takes only layouts with angles and sEMG
        on its fast path (others go one frame at a time), and their bounds check needs both parts."""
        return self.head[0] > 0 and self.head[1] > 0


def _slots_maker(cls: type):
    """``make(*fields)``: a ``cls`` of four fields equal to ``cls(*fields)``, made in about half the time: the
    slots are set directly instead of through the frozen dataclass's ``__init__`` (which has nothing else to
    do when every field is given: no ``__post_init__``). ``Frame`` is its user."""
    assert not hasattr(cls, "__post_init__") and len(cls.__slots__) == len(cls.__dataclass_fields__) == 4
    new = object.__new__
    s0, s1, s2, s3 = (getattr(cls, k).__set__ for k in cls.__slots__)

    def make4(a, b, c, d):
        f = new(cls)
        s0(f, a)
        s1(f, b)
        s2(f, c)
        s3(f, d)
        return f

    return make4


_frame = _slots_maker(Frame)


def _crc_table() -> np.ndarray:
    """``T[c]``: the CRC over a packet whose last two bytes hold ``c`` (little-endian) and are its correct CRC.

    The CRC register then runs on over those two bytes: ``crc16(body + le16(c)) == T[c]``
    holds exactly when ``crc16(body) == c`` (for fixed trailing bytes the register update
    is a bijection), so a whole packet is checked by one ``crc_hqx`` without slicing it.
    The map is linear over GF(2) (no xor-out): built from the 16 single-bit values.
    """
    cols = [binascii.crc_hqx(struct.pack("<H", 1 << i), 1 << i) for i in range(16)]
    s = np.arange(1 << 16, dtype=np.uint32)
    t = np.zeros(1 << 16, np.uint32)
    for i, col in enumerate(cols):
        t ^= ((s >> i) & 1) * col
    return t.astype(np.uint16)


_CRC_WHOLE = _crc_table()
_CRC_WHOLE_LIST = _CRC_WHOLE.tolist()


def _crc_ok(packets: list[bytes], arr: np.ndarray) -> np.ndarray:
    """Per packet: does its CRC field match (see ``_crc_table``)."""
    whole = np.fromiter(map(binascii.crc_hqx, packets, itertools.repeat(0xFFFF)), np.uint16, len(packets))
    return whole == _CRC_WHOLE[arr["crc"]]


def _finite_rows(arr: np.ndarray) -> np.ndarray:
    """Per packet: are all its values finite (what the reference's float64 sum tells: float32 values cannot
    overflow it, so it is non-finite exactly when a value is; checked value by value here, which warns of nothing)."""
    return np.isfinite(arr["v"]).all(axis=1)


def _consecutive(seqs: list[int]) -> bool:
    """True when each sequence number is the previous one + 1 (mod 2**32)."""
    return all((b - a) % SEQ_MOD == 1 for a, b in zip(seqs, seqs[1:]))


def _finite(values: Iterable[float]) -> bool:
    # One check for all: NaN and inf propagate through the sum; float32 wire values
    # cannot overflow a float64 sum of a packet's worth.
    return math.isfinite(sum(values))


# --------------------------------------------------------------------------- decoder


class Decoder:
    """Turns a byte stream into ``Frame`` / ``Hello`` / ``RawEmg`` / ``Exercise`` objects.

    ``feed(data)`` returns the packets completed by ``data`` in stream order. Any byte
    sequence is accepted: damaged packets are dropped and counted in ``stats``.

    With ``batch=True`` (the default) ``feed`` decodes the DATA packets a read completed
    together: COBS with :func:`cobs.fast_decode` (C when available), the CRCs with
    ``binascii.crc_hqx``, the numbers with one ``struct`` call per packet (``iter_unpack``
    over all of them, with the checks in numpy, when there are ``BATCH_MIN`` or more).
    ``batch=False`` is the reference path, one packet at a time in pure Python. Both
    return the same packets and the same ``stats`` for any input.

    :meth:`feed_blocks` is the gateway's fast path: the same decoding, counters and
    order, with each run of DATA frames handed over as one :class:`FrameBlock` instead
    of a ``Frame`` object per frame: row tuples for a few packets, and for a whole read
    of ``BATCH_MIN`` or more the float64 ``values`` the numpy checks already read (no
    tuples are built).

    ``max_packet`` bounds the decoded packet size and so the memory held between
    calls: a stream that never sends 0x00 keeps at most ``cobs.max_encoded_len(max_packet)``
    bytes and then discards until the next delimiter.
    """

    def __init__(self, max_packet: int = MAX_PACKET, *, batch: bool = True) -> None:
        if max_packet < MIN_PACKET:
            raise ValueError(f"max_packet must be at least {MIN_PACKET}, got {max_packet}")
        self.max_packet = max_packet
        self.batch = bool(batch)
        self._layout = _BatchLayout.of(N_ANGLES, N_EMG)  # the DATA layout decoded in batches; follows the stream
        self.max_encoded = cobs.max_encoded_len(max_packet)
        self.stats = DecoderStats()
        self._framer = DelimitedBuffer(b"\x00", self.max_encoded)
        self._data_seq = SeqTracker()
        self._raw_seq = SeqTracker()
        self.last_hello: Hello | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for a delimiter (always <= ``max_encoded``)."""
        return self._framer.buffered

    def wire_bytes(self, frames: int) -> int:
        """Bytes still to arrive before ``frames`` more DATA frames of the stream's layout are
        complete (the part of a frame already held counts; other packets in between are not foreseen)."""
        return max(0, frames * (cobs.max_encoded_len(self._layout.size) + 1) - self._framer.buffered)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Decode ``data``; return the packets it completed."""
        return self._feed(data, False)

    def feed_blocks(self, data: bytes | bytearray | memoryview) -> list[Packet | FrameBlock]:
        """``feed``, with each run of DATA frames of one layout as one :class:`FrameBlock` (no ``Frame`` objects)."""
        if not self.batch:
            return frame_blocks(self._feed(data, False))
        return self._feed(data, True)

    def _feed(self, data: bytes | bytearray | memoryview, rows: bool) -> list:
        try:
            data = bytes(data)
        except Exception:  # not bytes-like: nothing to decode
            return []
        self.stats.bytes += len(data)
        chunks, overflows = self._framer.split(data)
        for _ in range(overflows):
            self._framing_error()
        if self.batch:
            out = self._decode_batch(chunks, rows) if chunks else []
        else:
            out = []
            for chunk in chunks:
                if chunk:  # empty chunks (0x00 0x00) are idle fill, not errors
                    pkt = self._decode_chunk(chunk)
                    if pkt is not None:
                        out.append(pkt)
        self._sync_stats()
        return out

    # -- internals

    def _framing_error(self) -> None:
        self.stats.framing_errors += 1
        self.stats.resyncs += 1

    def _drop(self, counter: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self.stats.resyncs += 1

    def _sync_stats(self) -> None:
        d, r = self._data_seq, self._raw_seq
        if not (d.changed or r.changed):
            return
        d.changed = r.changed = False
        s = self.stats
        s.gaps, s.lost, s.duplicates, s.restarts = d.gaps, d.lost, d.duplicates, d.restarts
        s.raw_gaps, s.raw_lost, s.raw_duplicates = r.gaps, r.lost, r.duplicates

    def _decode_batch(self, chunks: list[bytes], as_rows: bool) -> list:
        """The batch path: the same checks, counters and order as ``_decode_chunk`` per chunk.

        Pass 1 COBS-decodes every chunk and sets aside the DATA packets of the batch layout
        (their checks run on all of them at once); any other packet takes the reference
        path, with its DATA frames parsed but not yet sequence-checked. Pass 2 walks the
        packets in stream order, so sequence accounting sees DATA frames as the reference does.
        ``as_rows``: DATA frames come as ``FrameBlock`` rows.
        """
        decode, errors = cobs.fast_decode, cobs.FAST_ERRORS
        layout = self._layout
        blen, bhead = layout.size, layout.head
        if blen > self.max_packet:
            blen = -1  # refused as too long (the reference path counts them)
        else:
            whole = (self._whole_read if len(chunks) >= BATCH_MIN else self._few_read)(chunks, layout, as_rows)
            if whole is not None:
                return whole
        items: list = []  # per packet in stream order: int (index into batch) or a Packet
        batch: list[bytes] = []
        relayout: Frame | None = None
        for chunk in chunks:
            if not chunk:  # idle fill, not an error
                continue
            try:
                pkt = decode(chunk)
            except errors:
                self._framing_error()
                continue
            if len(pkt) == blen and pkt[0] == PROTOCOL_VERSION and pkt[1] == TYPE_DATA and pkt[10:12] == bhead:
                items.append(len(batch))
                batch.append(pkt)
                continue
            p = self._decode_packet(pkt, check_seq=False)
            if p is not None:
                items.append(p)
                if type(p) is Frame:
                    relayout = p
        if relayout is not None and bytes((len(relayout.angles), len(relayout.emg))) != layout.head:
            self._layout = _BatchLayout.of(len(relayout.angles), len(relayout.emg))  # batch that layout from now on
        if not batch:
            return self._in_order(items, None, as_rows)
        ok, seqs, rows = (self._check_batch if len(batch) >= BATCH_MIN else self._check_few)(batch, layout)
        if ok is None and len(items) == len(batch) and _consecutive(seqs):
            return self._consecutive_frames(seqs, rows, layout, as_rows)
        return self._in_order(items, (ok, rows, layout), as_rows)

    def _whole_read(self, chunks: list[bytes], layout: "_BatchLayout", as_rows: bool) -> list | None:
        """The common read, decoded without a Python loop per packet: only DATA packets of the batch
        layout, all valid, seq + 1 each. None (nothing counted) for any other read."""
        try:
            pkts = list(map(cobs.fast_decode, chunks))
        except cobs.FAST_ERRORS:
            return None
        lengths = list(map(len, pkts))
        if min(lengths) != layout.size or max(lengths) != layout.size:
            return None
        buf = b"".join(pkts)
        arr = np.frombuffer(buf, layout.dtype)
        seq, v = arr["seq"], arr["v"]
        # both finite exactly when every value is (NaN propagates); a layout with no values has none to check
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)
        if not (((arr["vt"] == layout.vt) & (arr["nn"] == layout.nn)).all() and (seq[1:] - seq[:-1] == 1).all()
                and math.isfinite(lo) and math.isfinite(hi) and _crc_ok(pkts, arr).all()):
            return None
        if not as_rows:
            return self._consecutive_frames(seq.tolist(), list(layout.row.iter_unpack(buf)), layout, False)
        values = np.empty((len(arr), 2 + layout.n_angles + layout.n_emg), np.float64)  # the rows, as one array
        values[:, 0] = seq
        values[:, 1] = arr["t"]
        values[:, 2:] = v
        vetted = layout.vettable and block_in_bounds(v, layout.n_angles, (lo, hi))
        return self._consecutive_frames([int(seq[0]), int(seq[-1])], values, layout, True, vetted)

    def _few_read(self, chunks: list[bytes], layout: "_BatchLayout", as_rows: bool) -> list | None:
        """``_whole_read`` for a read of a few packets (one ``struct`` call and one CRC per packet, no numpy)."""
        decode, unpack, crc, size, vt, nn = cobs.fast_decode, layout.row.unpack, binascii.crc_hqx, layout.size, \
            layout.vth[:2], layout.head
        whole, isfinite = _CRC_WHOLE_LIST, math.isfinite
        e, A, E = layout.emg_at, MAX_ABS_ANGLE_RAD, MAX_ABS_EMG
        rows = []
        prev = -1
        # and within the physical bounds: values_in_bounds inline (this runs per frame; vettable: no empty part)
        vetted = as_rows and layout.vettable
        try:
            for c in chunks:
                pkt = decode(c)
                if len(pkt) != size or pkt[:2] != vt or pkt[10:12] != nn:
                    return None
                r = unpack(pkt)
                if (crc(pkt, 0xFFFF) != whole[pkt[-2] | pkt[-1] << 8] or not isfinite(sum(r))
                        or (prev >= 0 and (r[0] - prev) % SEQ_MOD != 1)):
                    return None
                if vetted:
                    v = r[2:]  # every value within the smaller bound (the angles') is within both
                    if not (-A <= min(v) and max(v) <= A):
                        a, m = r[2:e], r[e:]
                        vetted = -A <= min(a) and max(a) <= A and -E <= min(m) and max(m) <= E
                prev = r[0]
                rows.append(r)
        except cobs.FAST_ERRORS:
            return None
        return self._consecutive_frames([rows[0][0], prev], rows, layout, as_rows, vetted)

    def _consecutive_frames(self, seqs: list[int], rows: list[tuple] | np.ndarray, layout: "_BatchLayout",
                            as_rows: bool, vetted: bool = False) -> list:
        """Good DATA frames, seq + 1 each: only the first can be a gap, a restart or a duplicate
        of the previous read's last frame. ``rows``: row tuples, or (as rows) the block's float64
        ``values``; ``seqs``: at least the first and the last seq. ``vetted``: all within the physical
        bounds too."""
        keep_first = self._data_seq.check(seqs[0])
        self._data_seq.last = seqs[-1]
        if not keep_first:
            rows = rows[1:]
        self.stats.packets += len(rows)
        self.stats.frames += len(rows)
        if as_rows:
            if not len(rows):
                return []
            if type(rows) is list:
                return [FrameBlock(layout.n_angles, layout.n_emg, rows, vetted)]
            return [FrameBlock(layout.n_angles, layout.n_emg, None, vetted, values=rows)]
        e = layout.emg_at
        return [_frame(r[0], r[1], r[2:e], r[e:]) for r in rows]

    def _in_order(self, items: list, batch: tuple | None, as_rows: bool) -> list:
        """Pass 2 in stream order: sequence-check and count the DATA frames; keep the other packets."""
        out: list = []
        check = self._data_seq.check
        st = self.stats
        for it in items:
            if type(it) is int:
                ok, rows, lay = batch
                if ok is not None and not ok[it]:
                    continue
                r = rows[it]
                if not check(r[0]):
                    continue
                if as_rows:
                    add_row(out, lay.n_angles, lay.n_emg, r)
                else:
                    e = lay.emg_at
                    out.append(_frame(r[0], r[1], r[2:e], r[e:]))
            elif type(it) is Frame:
                if not check(it.seq):
                    continue
                if as_rows:
                    add_row(out, len(it.angles), len(it.emg), (it.seq, it.t_ms, *it.angles, *it.emg))
                else:
                    out.append(it)
            else:
                out.append(it)
                continue
            st.packets += 1
            st.frames += 1
        return out

    def _check_few(self, batch: list[bytes], layout: "_BatchLayout") -> tuple:
        """``_check_batch`` for a few packets (a read of one or two frames): one ``struct`` call and one CRC
        per packet, no numpy."""
        crc, unpack = binascii.crc_hqx, layout.row.unpack
        ok: list[bool] | None = None
        seqs, rows = [], []
        st = self.stats
        for k, pkt in enumerate(batch):
            r = unpack(pkt)
            seqs.append(r[0])
            rows.append(r)
            if crc(pkt[:-CRC_SIZE], 0xFFFF) != pkt[-2] | pkt[-1] << 8:
                st.crc_errors += 1
            elif not math.isfinite(sum(r)):  # NaN/inf propagate; seq and t_ms are finite
                st.malformed += 1
            else:
                continue
            st.resyncs += 1
            if ok is None:
                ok = [True] * len(batch)
            ok[k] = False
        return ok, seqs, rows

    def _check_batch(self, batch: list[bytes], layout: "_BatchLayout") -> tuple:
        """CRC and value checks on DATA packets of one layout (bad ones counted).

        Returns ``(ok, seqs, rows)``: ``ok`` is a list of bools per packet, or None when all
        passed; ``seqs`` the sequence numbers; ``rows`` each packet's fields as one tuple
        (``struct.iter_unpack``: seq, t_ms, values...).
        """
        buf = b"".join(batch)
        arr = np.frombuffer(buf, layout.dtype)
        crc_ok = _crc_ok(batch, arr)
        finite = _finite_rows(arr)
        good = crc_ok & finite
        ok = None
        if not good.all():
            n_crc = int(len(batch) - np.count_nonzero(crc_ok))
            n_bad = int(np.count_nonzero(crc_ok & ~finite))
            self.stats.crc_errors += n_crc
            self.stats.malformed += n_bad
            self.stats.resyncs += n_crc + n_bad
            ok = good.tolist()
        return ok, arr["seq"].tolist(), list(layout.row.iter_unpack(buf))

    def _decode_chunk(self, chunk: bytes) -> Packet | None:
        try:
            pkt = cobs.decode(chunk)
        except cobs.CobsError:
            self._framing_error()
            return None
        return self._decode_packet(pkt)

    def _decode_packet(self, pkt: bytes, check_seq: bool = True) -> Packet | None:
        """Checks and parses one COBS-decoded packet. With ``check_seq=False`` a DATA frame is
        returned (and counted) only by the caller, after its sequence check."""
        if len(pkt) < MIN_PACKET or len(pkt) > self.max_packet:
            self._framing_error()
            return None
        body = pkt[:-CRC_SIZE]
        if crc16(body) != _CRC.unpack_from(pkt, len(body))[0]:
            self._drop("crc_errors")
            return None
        version, ptype, seq, t_ms = HEADER.unpack_from(body)
        payload = body[HEADER_SIZE:]
        try:
            if ptype == TYPE_HELLO:
                # HELLO keeps its layout in every protocol version, so a gateway can
                # always tell who is talking and refuse a newer wearable by name.
                return self._hello(version, seq, t_ms, payload)
            if version != PROTOCOL_VERSION or ptype not in (TYPE_DATA, TYPE_RAW_EMG, TYPE_EXERCISE):
                self._drop("unsupported")
                return None
            if ptype == TYPE_DATA:
                return self._data(seq, t_ms, payload, check_seq)
            if ptype == TYPE_EXERCISE:
                return self._exercise(seq, t_ms, payload)
            return self._raw(seq, t_ms, payload)
        except (struct.error, ValueError, IndexError):
            self._drop("malformed")
            return None

    def _hello(self, version: int, seq: int, t_ms: int, payload: bytes) -> Hello | None:
        n_angles, n_emg, _flags, fs, raw_fs = HELLO_FIXED.unpack_from(payload)
        pos = HELLO_FIXED.size
        strings = []
        for _ in range(3):
            ln = payload[pos]
            if ln > HELLO_MAX_STR or pos + 1 + ln > len(payload):
                raise ValueError("string length")
            strings.append(payload[pos + 1 : pos + 1 + ln].decode("utf-8"))  # UnicodeDecodeError is a ValueError
            pos += 1 + ln
        if pos != len(payload) or not (math.isfinite(fs) and math.isfinite(raw_fs)):
            raise ValueError("hello length or rate")
        hello = Hello(seq, t_ms, strings[0], strings[1], version, n_angles, n_emg, fs, raw_fs, strings[2])
        self.stats.packets += 1
        self.stats.hellos += 1
        self.last_hello = hello
        return hello

    def _data(self, seq: int, t_ms: int, payload: bytes, check_seq: bool = True) -> Frame | None:
        n_angles, n_emg = DATA_HEAD.unpack_from(payload)
        n = n_angles + n_emg
        if len(payload) != DATA_HEAD.size + 4 * n:
            raise ValueError("data length")
        values = struct.unpack_from(f"<{n}f", payload, DATA_HEAD.size)
        if not _finite(values):
            raise ValueError("non-finite value")
        if not check_seq:  # the batch path counts it after its sequence check
            return Frame(seq, t_ms, values[:n_angles], values[n_angles:])
        if not self._data_seq.check(seq):
            return None
        self.stats.packets += 1
        self.stats.frames += 1
        return Frame(seq, t_ms, values[:n_angles], values[n_angles:])

    def _raw(self, seq: int, t_ms: int, payload: bytes) -> RawEmg | None:
        rate, n_ch, n_s = RAW_HEAD.unpack_from(payload)
        if n_ch == 0 or n_s == 0 or len(payload) != RAW_HEAD.size + 4 * n_ch * n_s:
            raise ValueError("raw length")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("raw rate")
        values = struct.unpack_from(f"<{n_ch * n_s}f", payload, RAW_HEAD.size)
        if not _finite(values):
            raise ValueError("non-finite value")
        if not self._raw_seq.check(seq):
            return None
        self.stats.packets += 1
        self.stats.raw_blocks += 1
        samples = tuple(values[i : i + n_ch] for i in range(0, len(values), n_ch))
        return RawEmg(seq, t_ms, rate, samples)


    def _exercise(self, seq: int, t_ms: int, payload: bytes) -> Exercise:
        if len(payload) != EXERCISE_PAYLOAD.size:
            raise ValueError("exercise length")
        (code,) = EXERCISE_PAYLOAD.unpack(payload)
        if code >= len(EXERCISES) and code != EXERCISE_NONE:
            raise ValueError("exercise code")
        self.stats.packets += 1
        self.stats.exercises += 1
        return Exercise(seq, t_ms, code)


# --------------------------------------------------------------------------- encoder


def _seal(ptype: int, seq: int, t_ms: int, payload: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    body = HEADER.pack(version, ptype, seq % SEQ_MOD, t_ms % T_MS_MOD) + payload
    if len(body) + CRC_SIZE > MAX_PACKET:
        raise ValueError(f"packet of {len(body) + CRC_SIZE} bytes exceeds {MAX_PACKET}")
    return cobs.encode(body + _CRC.pack(crc16(body))) + b"\x00"


def encode_frame(frame: Frame) -> bytes:
    """A complete DATA packet (COBS + trailing 0x00) for ``frame``."""
    n_a, n_e = len(frame.angles), len(frame.emg)
    if n_a > 255 or n_e > 255:
        raise ValueError("at most 255 angles and 255 sEMG channels")
    payload = DATA_HEAD.pack(n_a, n_e) + struct.pack(f"<{n_a + n_e}f", *frame.angles, *frame.emg)
    return _seal(TYPE_DATA, frame.seq, frame.t_ms, payload)


def _str_field(name: str, value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > HELLO_MAX_STR:
        raise ValueError(f"HELLO {name} is {len(raw)} bytes of UTF-8, at most {HELLO_MAX_STR}")
    return bytes([len(raw)]) + raw


def encode_hello(
    seq: int,
    t_ms: int,
    device_id: str,
    firmware: str,
    *,
    n_angles: int = 13,
    n_emg: int = 4,
    sample_rate_hz: float = 60.0,
    raw_emg_rate_hz: float = 0.0,
    layout: str = DEFAULT_LAYOUT,
    protocol_version: int = PROTOCOL_VERSION,
) -> bytes:
    """A complete HELLO packet."""
    payload = (
        HELLO_FIXED.pack(n_angles, n_emg, 0, sample_rate_hz, raw_emg_rate_hz)
        + _str_field("device_id", device_id)
        + _str_field("firmware", firmware)
        + _str_field("layout", layout)
    )
    return _seal(TYPE_HELLO, seq, t_ms, payload, version=protocol_version)


def encode_hello_obj(hello: Hello) -> bytes:
    """``encode_hello`` from a ``Hello`` object."""
    return encode_hello(
        hello.seq, hello.t_ms, hello.device_id, hello.firmware,
        n_angles=hello.n_angles, n_emg=hello.n_emg, sample_rate_hz=hello.sample_rate_hz,
        raw_emg_rate_hz=hello.raw_emg_rate_hz, layout=hello.layout, protocol_version=hello.protocol_version,
    )  # fmt: skip


def encode_raw_emg(seq: int, t_ms: int, rate_hz: float, samples: Sequence[Sequence[float]]) -> bytes:
    """A complete RAW_EMG packet: ``samples[N][C]``, 1 <= N <= 60, all rows of equal length."""
    n_s = len(samples)
    n_ch = len(samples[0]) if n_s else 0
    if not 1 <= n_s <= MAX_RAW_SAMPLES or not 1 <= n_ch <= 255 or any(len(r) != n_ch for r in samples):
        raise ValueError(f"RAW_EMG needs 1..{MAX_RAW_SAMPLES} samples of equal channel count, got {n_s}")
    flat = [v for row in samples for v in row]
    payload = RAW_HEAD.pack(rate_hz, n_ch, n_s) + struct.pack(f"<{len(flat)}f", *flat)
    return _seal(TYPE_RAW_EMG, seq, t_ms, payload)


def encode_exercise(seq: int, t_ms: int, code: int) -> bytes:
    """A complete EXERCISE packet: ``code`` 0..8 (EmoPain exercise type) or ``EXERCISE_NONE``."""
    if not (0 <= code < len(EXERCISES) or code == EXERCISE_NONE):
        raise ValueError(f"exercise code {code}: expected 0..{len(EXERCISES) - 1} or {EXERCISE_NONE} (none)")
    return _seal(TYPE_EXERCISE, seq, t_ms, EXERCISE_PAYLOAD.pack(code))


def encode_packet(pkt: Packet) -> bytes:
    """Encode any decoded object back to its wire bytes."""
    if isinstance(pkt, Frame):
        return encode_frame(pkt)
    if isinstance(pkt, Hello):
        return encode_hello_obj(pkt)
    if isinstance(pkt, RawEmg):
        return encode_raw_emg(pkt.seq, pkt.t_ms, pkt.rate_hz, pkt.samples)
    if isinstance(pkt, Exercise):
        return encode_exercise(pkt.seq, pkt.t_ms, pkt.code)
    raise TypeError(f"cannot encode {type(pkt).__name__}")


class Encoder:
    """Stateful encoder for a device: numbers DATA, HELLO and RAW_EMG packets itself.

    ``Encoder(device_id="wear-01").frame(t_ms, angles, emg)`` returns wire bytes and
    advances the DATA sequence number (uint32, wraps).
    """

    def __init__(
        self,
        device_id: str = "alanet-0001",
        *,
        firmware: str = "sim-1.0",
        sample_rate_hz: float = 60.0,
        raw_emg_rate_hz: float = 0.0,
        layout: str = DEFAULT_LAYOUT,
        n_angles: int = 13,
        n_emg: int = 4,
    ) -> None:
        self.device_id, self.firmware, self.layout = device_id, firmware, layout
        self.sample_rate_hz, self.raw_emg_rate_hz = sample_rate_hz, raw_emg_rate_hz
        self.n_angles, self.n_emg = n_angles, n_emg
        self.data_seq = self.hello_seq = self.raw_seq = self.exercise_seq = 0

    def hello(self, t_ms: int) -> bytes:
        b = encode_hello(
            self.hello_seq, t_ms, self.device_id, self.firmware, n_angles=self.n_angles, n_emg=self.n_emg,
            sample_rate_hz=self.sample_rate_hz, raw_emg_rate_hz=self.raw_emg_rate_hz, layout=self.layout,
        )  # fmt: skip
        self.hello_seq = (self.hello_seq + 1) % SEQ_MOD
        return b

    def frame(self, t_ms: int, angles: Sequence[float], emg: Sequence[float], seq: int | None = None) -> bytes:
        """Encode one frame; ``seq`` defaults to the next DATA sequence number."""
        if seq is None:
            seq = self.data_seq
        self.data_seq = (seq + 1) % SEQ_MOD
        return encode_frame(Frame(seq, t_ms, tuple(angles), tuple(emg)))

    def raw_emg(self, t_ms: int, samples: Sequence[Sequence[float]]) -> bytes:
        b = encode_raw_emg(self.raw_seq, t_ms, self.raw_emg_rate_hz, samples)
        self.raw_seq = (self.raw_seq + 1) % SEQ_MOD
        return b

    def exercise(self, t_ms: int, code: int) -> bytes:
        """Report the exercise the wearer is doing (EmoPain code 0..8, or ``EXERCISE_NONE``)."""
        b = encode_exercise(self.exercise_seq, t_ms, code)
        self.exercise_seq = (self.exercise_seq + 1) % SEQ_MOD
        return b
