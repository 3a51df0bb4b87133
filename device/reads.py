"""Serial reads waiting for the gateway's main loop, held per wearer until they are worth a call.

A 60 Hz wearable sends a frame every 17 ms, but only one frame in a stride (45 at the
EmoPain settings) completes a window; the others only need to be decoded and kept
before the serial buffers fill. Handing every read to the pipeline as it comes costs
the per-call work (decoder, pipeline, session hooks) once per frame or less. So the
main loop keeps each wearer's chunks here and takes them, joined into one read:

- at once when they hold the bytes that complete the wearer's next window (its
  *need*, which the loop sets after each read from the decoder and the pipeline):
  a window goes out as soon as its last frame is in, as before;
- otherwise when the oldest of them has waited ``hold_s``: the frames between two
  windows are processed a few reads at a time instead of one read per frame; and
  before any window once they have waited ``URGENT * hold_s`` (so that under load no
  wearer's data, counters and faults wait for its own next window, and what is held
  stays bounded).

The need is an estimate in wire bytes: when frames of the coming window are lost on
the wire (the pipeline bridges short gaps), the read that completes it waits for as
many later frames, or for ``hold_s``; after a model switch the caller clears every
need (:meth:`HeldReads.clear_needs`).

``hold_s = 0`` hands every chunk over as soon as the loop asks. Pure bookkeeping (no
I/O, no clock: the caller passes the time), so the capacity benchmark replays the
same rules on simulated time.
"""

from __future__ import annotations

import sys
from collections import deque

NEVER = sys.maxsize  # a need no read meets: the chunks wait for ``hold_s``
#: Held chunks that have waited this many ``hold_s`` go before windows. 1.5 rather than 2: at the
#: gateway's 400 ms hold that is 600 ms, 0.2 s inside what a 4 KiB serial buffer holds of one 60 Hz
#: wearable (~0.81 s); at 1,000 wearables it also measured a lower p99 (20 ms against 48-87 ms).
URGENT = 1.5


class _Held:
    """One wearer's held chunks."""

    __slots__ = ("since", "size", "chunks", "ready")

    def __init__(self, since: float) -> None:
        self.since = since  # arrival of the first chunk
        self.size = 0  # bytes held
        self.chunks: list[bytes] = []
        self.ready = False  # in the ready queue (the bytes meet the wearer's need)


class HeldReads:
    """Chunks per wearer, longest waiting first; see the module docstring."""

    def __init__(self, wearers: int, hold_s: float, limit: int) -> None:
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, got {hold_s}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.hold_s = float(hold_s)
        self.limit = int(limit)  # chunks held in all before the caller should stop taking more in
        self.chunks = 0  # chunks held in all
        self._need = [0] * wearers  # bytes that complete each wearer's next window (0: any read)
        self._held: dict[int, _Held] = {}  # in the order of their first chunk's arrival
        self._ready: deque[int] = deque()  # wearers whose held bytes meet their need, in that order

    def __bool__(self) -> bool:
        return bool(self._held)

    @property
    def full(self) -> bool:
        return self.chunks >= self.limit

    def add(self, i: int, chunk: bytes, now: float) -> None:
        """Hold one chunk of wearer ``i`` that arrived at ``now``."""
        e = self._held.get(i)
        if e is None:
            e = self._held[i] = _Held(now)
        e.size += len(chunk)
        e.chunks.append(chunk)
        self.chunks += 1
        if not e.ready and e.size >= self._need[i]:
            e.ready = True
            self._ready.append(i)

    def need(self, i: int) -> int:
        """Bytes that complete wearer ``i``'s next window, counted from its last read (``NEVER``: none is coming)."""
        return self._need[i]

    def set_need(self, i: int, need: int | None) -> None:
        """Bytes wearer ``i`` still needs for its next window (``None``: no window is coming; hold only)."""
        self._need[i] = NEVER if need is None else max(0, int(need))
        e = self._held.get(i)
        if e is not None and not e.ready and e.size >= self._need[i]:
            e.ready = True
            self._ready.append(i)

    def clear_needs(self) -> None:
        """Forget every need (e.g. after a model switch: other windows, strides or rates): the next
        read of each wearer goes out at once and sets it again."""
        for i in range(len(self._need)):
            self.set_need(i, 0)

    def next_due(self) -> float | None:
        """When the oldest held chunks come due by age (None when nothing is held)."""
        if not self._held:
            return None
        return next(iter(self._held.values())).since + self.hold_s

    def due(self, now: float) -> bool:
        """Whether :meth:`take` would hand a read over at ``now``."""
        if self._ready:
            return True
        t = self.next_due()
        return t is not None and now >= t

    def wait_s(self, now: float, most: float) -> float:
        """Seconds until the oldest held chunks are due (``most`` when nothing is held, 0 when due now)."""
        if self._ready:
            return 0.0
        t = self.next_due()
        return most if t is None else min(most, max(0.0, t - now))

    def take(self, now: float, *, drain: bool = False) -> tuple[int, list[bytes], float] | None:
        """The next read: ``(wearer, its chunks in order, arrival of the first)``, or None when nothing
        is due. Windows first (held bytes that meet the need), then by age; but chunks that have waited
        ``URGENT * hold_s`` go before windows (under load windows would otherwise keep them waiting until
        their own wearer's next window). ``drain``: anything held, oldest first."""
        held = self._held
        if not held:
            return None
        oldest, e = next(iter(held.items()))
        if drain or (self.hold_s > 0 and now >= e.since + URGENT * self.hold_s):
            return self._pop(oldest)
        while self._ready:
            i = self._ready.popleft()
            r = held.get(i)
            if r is not None and r.ready:
                return self._pop(i)
        if now >= e.since + self.hold_s:  # the same sum as next_due(): due exactly then
            return self._pop(oldest)
        return None

    def _pop(self, i: int) -> tuple[int, list[bytes], float]:
        e = self._held.pop(i)
        self.chunks -= len(e.chunks)
        return i, e.chunks, e.since
