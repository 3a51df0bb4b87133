"""Wire protocol v1: constants, packet types and the decoded objects.

The byte layouts are specified in ``PROTOCOL.md`` next to this module; this module
is its executable form. Everything on the wire is little-endian; floats are IEEE-754
binary32.

Packet (before COBS framing)::

    off  size  field
      0     1  version      (PROTOCOL_VERSION = 1)
      1     1  type         (HELLO 0x01, DATA 0x02, RAW_EMG 0x03, EXERCISE 0x04)
      2     4  seq          uint32, per packet type, wraps modulo 2**32
      6     4  t_ms         uint32 device milliseconds since boot, wraps modulo 2**32
     10     n  payload      (type specific)
   10+n     2  crc          CRC-16/CCITT-FALSE over bytes [0, 10+n), little-endian

On the wire: ``COBS(packet) + b"\\x00"``.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Sequence

import numpy as np

PROTOCOL_VERSION = 1

TYPE_HELLO = 0x01
TYPE_DATA = 0x02
TYPE_RAW_EMG = 0x03
TYPE_EXERCISE = 0x04
TYPE_NAMES = {TYPE_HELLO: "HELLO", TYPE_DATA: "DATA", TYPE_RAW_EMG: "RAW_EMG", TYPE_EXERCISE: "EXERCISE"}

HEADER = struct.Struct("<BBII")  # version, type, seq, t_ms
HEADER_SIZE = HEADER.size  # 10
CRC_SIZE = 2
MIN_PACKET = HEADER_SIZE + CRC_SIZE  # 12

# HELLO payload fixed part: n_angles u8, n_emg u8, flags u16, sample_rate f32, raw_emg_rate f32.
HELLO_FIXED = struct.Struct("<BBHff")
HELLO_MAX_STR = 32  # bytes of UTF-8 per string field (device_id, firmware, layout)

# DATA payload head: n_angles u8, n_emg u8; then (n_angles + n_emg) float32.
DATA_HEAD = struct.Struct("<BB")
# RAW_EMG payload head: rate_hz f32, n_channels u8, n_samples u8; then samples float32, sample-major.
RAW_HEAD = struct.Struct("<fBB")

# EXERCISE payload: code u8 (EmoPain exercise type 0..8, EXERCISE_NONE = no exercise).
EXERCISE_PAYLOAD = struct.Struct("<B")
#: The EmoPain exercise vocabulary, indexed by its code (column 31 of the EmoPain files).
EXERCISES: tuple[str, ...] = ("other", "one_leg_stand", "reach_forward", "bend", "sit_to_stand", "stand_to_sit",
                              "sitting_still", "standing_still", "walking")
EXERCISE_NONE = 0xFF

#: Largest packet (before COBS) a v1 decoder accepts by default and a v1 encoder produces.
MAX_PACKET = 1024
#: Most raw sEMG samples per RAW_EMG block (u8 count; 4 channels x 60 x 4 B = 960 B payload).
MAX_RAW_SAMPLES = 60

SEQ_MOD = 1 << 32
T_MS_MOD = 1 << 32

#: Channel layouts this gateway knows: name -> (n_angles, n_emg).
LAYOUTS: dict[str, tuple[int, int]] = {"emopain-13a4e": (13, 4)}
DEFAULT_LAYOUT = "emopain-13a4e"
N_ANGLES = 13
N_EMG = 4

# Physical bounds (PROTOCOL.md §3.4). A value outside them is a firmware "invalid"
# marker (±3.4e38 is common) or a broken sensor, never a measurement: the gateway
# drops the packet and counts it, so such values never reach the features or a model.
#: Largest |joint angle| in rad (a joint cannot turn further than one full turn either way).
MAX_ABS_ANGLE_RAD = 2.0 * math.pi
#: Largest |sEMG envelope| (a.u.; EmoPain envelopes are of order 1).
MAX_ABS_EMG = 1.0e5
#: Largest |raw sEMG sample| (a.u.; a 24-bit ADC's counts fit).
MAX_ABS_RAW_EMG = 1.0e7
#: Accepted DATA sample rates (Hz) and raw sEMG rates (Hz; 0 = no raw sEMG).
MAX_SAMPLE_RATE_HZ = 1000.0
MAX_RAW_EMG_RATE_HZ = 20000.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One sample of the wearable: 13 joint angles (rad) and 4 sEMG envelopes (a.u.).

    ``seq`` counts DATA packets since the device booted (uint32, wraps); ``t_ms`` is the
    device clock in milliseconds (uint32, wraps after ~49.7 days).
    """

    seq: int
    t_ms: int
    angles: tuple[float, ...]
    emg: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Hello:
    """Who is talking: sent at boot and every few seconds so a late gateway learns the layout."""

    seq: int
    t_ms: int
    device_id: str
    firmware: str
    protocol_version: int
    n_angles: int
    n_emg: int
    sample_rate_hz: float
    raw_emg_rate_hz: float
    layout: str


@dataclass(frozen=True, slots=True)
class RawEmg:
    """A block of raw sEMG samples ``samples[N][n_channels]`` at ``rate_hz``.

    ``seq`` counts RAW_EMG blocks (its own counter); ``t_ms`` is the time of the first sample.
    """

    seq: int
    t_ms: int
    rate_hz: float
    samples: tuple[tuple[float, ...], ...]


@dataclass(frozen=True, slots=True)
class Exercise:
    """The exercise the wearable reports (optional): ``code`` indexes :data:`EXERCISES`, or is
    :data:`EXERCISE_NONE`. ``seq`` counts EXERCISE packets (its own counter)."""

    seq: int
    t_ms: int
    code: int

    @property
    def name(self) -> str | None:
        """The exercise id (``bend``, ``sit_to_stand``, ...), or ``None`` for no exercise."""
        return EXERCISES[self.code] if self.code < len(EXERCISES) else None


Packet = Frame | Hello | RawEmg | Exercise


class FrameBlock:
    """DATA frames of one channel layout, in stream order, without a ``Frame`` object per frame.

    ``rows[k]`` is frame k as one tuple ``(seq, t_ms, *angles, *emg)`` (what
    ``struct.iter_unpack`` gives for a packet); ``n_angles`` / ``n_emg`` split it. The
    decoder's fast path (``Decoder.feed_blocks``) hands reads over this way; neither the
    rows nor ``values`` are to be changed once handed over. :meth:`frames` gives the
    same frames as ``Frame`` objects.

    ``values``: the same rows as one float64 array ``[n, 2 + n_angles + n_emg]`` (seq and
    t_ms are exact in float64), when the block was built from one (the decoder's
    whole-read path: it never builds the tuples, and ``rows`` makes them only when asked).
    :meth:`array` gives that array for any block.

    ``vetted``: the decoder found every row finite and within the physical bounds
    (:func:`values_in_bounds`, :func:`block_in_bounds`), and each row's seq the one before + 1 (mod 2**32), so a
    consumer that checks the same need only check how the first row follows its own last.
    Equality compares the layout and the rows (not how they are held, nor ``vetted``).
    """

    __slots__ = ("n_angles", "n_emg", "_rows", "values", "vetted")

    def __init__(self, n_angles: int, n_emg: int, rows: list | None = None, vetted: bool = False, *,
                 values: np.ndarray | None = None) -> None:
        if (rows is None) == (values is None):
            raise ValueError("a FrameBlock holds rows or values (exactly one of them)")
        self.n_angles = n_angles
        self.n_emg = n_emg
        self._rows = rows
        self.values = values
        self.vetted = vetted

    @property
    def rows(self) -> list:
        if self._rows is None:
            self._rows = [values_row(r) for r in self.values.tolist()]
        return self._rows

    def array(self) -> np.ndarray:
        """The rows as float64 ``[n, 2 + n_angles + n_emg]`` (``values`` when the block holds them)."""
        if self.values is not None:
            return self.values
        return np.array(self._rows, np.float64).reshape(len(self._rows), 2 + self.n_angles + self.n_emg)

    def __len__(self) -> int:
        return len(self._rows) if self.values is None else len(self.values)

    def __eq__(self, other: object) -> bool:
        if type(other) is not FrameBlock:
            return NotImplemented
        return (self.n_angles, self.n_emg, self.rows) == (other.n_angles, other.n_emg, other.rows)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        held = f"rows={self._rows!r}" if self.values is None else f"values=<{len(self.values)} rows>"
        return f"FrameBlock(n_angles={self.n_angles}, n_emg={self.n_emg}, {held}, vetted={self.vetted})"

    def frame(self, k: int) -> Frame:
        """Row ``k`` as a ``Frame``."""
        return row_frame(self.rows[k], self.n_angles)

    def frames(self) -> list[Frame]:
        return [row_frame(r, self.n_angles) for r in self.rows]


def values_row(values: list[float]) -> tuple:
    """A ``FrameBlock`` row ``(seq, t_ms, *angles, *emg)`` from one row of its ``values`` as a list
    (seq and t_ms are exact in float64; they become ints again)."""
    return (int(values[0]), int(values[1]), *values[2:])


def row_frame(row: tuple, n_angles: int) -> Frame:
    """The ``Frame`` of one ``FrameBlock`` row."""
    e = 2 + n_angles
    return Frame(row[0], row[1], row[2:e], row[e:])


def add_row(out: list, n_angles: int, n_emg: int, row: tuple) -> None:
    """Append a frame's row to ``out``: to its last item when that is a ``FrameBlock`` of the same layout,
    else as a new block."""
    last = out[-1] if out else None
    if type(last) is FrameBlock and last.values is None and last.n_angles == n_angles and last.n_emg == n_emg:
        last.rows.append(row)
    else:
        out.append(FrameBlock(n_angles, n_emg, [row]))


def frame_blocks(packets: Sequence[Packet | FrameBlock]) -> list[Packet | FrameBlock]:
    """``packets`` with each run of ``Frame`` objects of one layout turned into one ``FrameBlock`` (order kept)."""
    out: list = []
    for p in packets:
        if type(p) is Frame:
            add_row(out, len(p.angles), len(p.emg), (p.seq, p.t_ms, *p.angles, *p.emg))
        elif type(p) is FrameBlock:
            # its own list (add_row may extend it), so not vetted: the rows added are checked again
            out.append(FrameBlock(p.n_angles, p.n_emg, list(p.rows)))
        else:
            out.append(p)
    return out


def hello_problem(hello: Hello, *, expect_layout: str | None = DEFAULT_LAYOUT) -> str | None:
    """Why a gateway must refuse this wearable, or ``None`` when it can use it.

    Checks the protocol version, that the layout is known and matches the channel
    counts, and (when ``expect_layout`` is given) that it is the layout the model wants.
    """
    if hello.protocol_version != PROTOCOL_VERSION:
        return (
            f"wearable {hello.device_id!r} speaks protocol v{hello.protocol_version}, "
            f"this gateway speaks v{PROTOCOL_VERSION}"
        )
    if hello.layout not in LAYOUTS:
        return f"wearable {hello.device_id!r} sends unknown channel layout {hello.layout!r} (known: {', '.join(sorted(LAYOUTS))})"
    if LAYOUTS[hello.layout] != (hello.n_angles, hello.n_emg):
        n_a, n_e = LAYOUTS[hello.layout]
        return (
            f"wearable {hello.device_id!r}: layout {hello.layout!r} needs {n_a} angles + {n_e} sEMG, "
            f"HELLO says {hello.n_angles} + {hello.n_emg}"
        )
    if expect_layout is not None and hello.layout != expect_layout:
        return f"wearable {hello.device_id!r} sends layout {hello.layout!r}, the model needs {expect_layout!r}"
    if not 0 < hello.sample_rate_hz <= MAX_SAMPLE_RATE_HZ:
        return f"wearable {hello.device_id!r} announces sample rate {hello.sample_rate_hz:g} Hz (0 < rate <= {MAX_SAMPLE_RATE_HZ:g})"
    if not 0 <= hello.raw_emg_rate_hz <= MAX_RAW_EMG_RATE_HZ:
        return (f"wearable {hello.device_id!r} announces raw sEMG rate {hello.raw_emg_rate_hz:g} Hz "
                f"(0 <= rate <= {MAX_RAW_EMG_RATE_HZ:g})")
    return None


def _within(values: tuple[float, ...], limit: float) -> bool:
    # The sum catches NaN and ±inf (min/max may step over a NaN); then min/max are exact.
    return not values or (-limit <= min(values) and max(values) <= limit and math.isfinite(sum(values)))


def frame_problem(frame: Frame, hello: Hello) -> str | None:
    """Why a DATA frame must be dropped given the wearable's accepted HELLO, or ``None``.

    The channel counts must be the HELLO's and every value must lie within the
    physical bounds (``MAX_ABS_ANGLE_RAD``, ``MAX_ABS_EMG``; NaN and ±inf never do).
    The reason is short and fixed per kind, so callers can count and log it once.
    """
    a, e = frame.angles, frame.emg
    if len(a) != hello.n_angles or len(e) != hello.n_emg:
        return "shape"
    return None if values_in_bounds(a, e) else "range"


def values_in_bounds(a: Sequence[float], e: Sequence[float]) -> bool:
    """:func:`frame_problem`'s range verdict for one frame's angles and sEMG values."""
    # inline (this runs for every frame): min/max bound the values, the sum catches NaN and ±inf
    if a and not (-MAX_ABS_ANGLE_RAD <= min(a) and max(a) <= MAX_ABS_ANGLE_RAD):
        return False
    if e and not (-MAX_ABS_EMG <= min(e) and max(e) <= MAX_ABS_EMG):
        return False
    return math.isfinite(sum(a) + sum(e))


def block_in_bounds(values: np.ndarray, n_angles: int, extremes: tuple[float, float] | None = None) -> bool:
    """:func:`values_in_bounds` for every row of finite ``values`` [n, angles + sEMG] (float32 from the
    wire, or float64) at once, from the block's extremes: compared as float64, so a float32 value just
    past a bound is out as it is for the per-frame check. True for an empty block. ``extremes``: the
    block's (min, max) when the caller has them already."""
    if values.size == 0:
        return True
    lo, hi = (float(values.min()), float(values.max())) if extremes is None else extremes
    if -MAX_ABS_ANGLE_RAD <= lo and hi <= MAX_ABS_ANGLE_RAD <= MAX_ABS_EMG:
        return True  # every value within the smaller bound
    a, m = values[:, :n_angles], values[:, n_angles:]
    return ((a.size == 0 or (-MAX_ABS_ANGLE_RAD <= float(a.min()) and float(a.max()) <= MAX_ABS_ANGLE_RAD))
            and (m.size == 0 or (-MAX_ABS_EMG <= float(m.min()) and float(m.max()) <= MAX_ABS_EMG)))


def frames_in_bounds(angles: np.ndarray, emg: np.ndarray) -> np.ndarray:
    """:func:`frame_problem`'s range verdict for many frames of the HELLO's shape at once:
    per row of ``angles`` [n, J] and ``emg`` [n, E], True when every value is within the
    physical bounds (NaN and ±inf never are: ``max`` propagates NaN, and neither compares
    ``<=`` a bound)."""
    ok = np.abs(angles).max(axis=1, initial=0.0) <= MAX_ABS_ANGLE_RAD
    ok &= np.abs(emg).max(axis=1, initial=0.0) <= MAX_ABS_EMG
    return ok


def raw_problem(raw: RawEmg, hello: Hello) -> str | None:
    """Why a RAW_EMG block must be dropped given the accepted HELLO, or ``None``.

    The block's rate must be the HELLO's ``raw_emg_rate_hz`` (which must be > 0), every
    sample row must have ``n_emg`` channels and every value lie within ``MAX_ABS_RAW_EMG``.
    """
    if not hello.raw_emg_rate_hz > 0 or abs(raw.rate_hz - hello.raw_emg_rate_hz) > 1e-3 * hello.raw_emg_rate_hz:
        return "rate"
    if not raw.samples or any(len(row) != hello.n_emg for row in raw.samples):
        return "shape"
    if not all(_within(row, MAX_ABS_RAW_EMG) for row in raw.samples):
        return "range"
    return None
