"""Delimiter framing shared by the binary (0x00) and CSV (newline) decoders. Sans-I/O.

Like h11's receive buffer: bytes already searched are never searched again (only the
new data is scanned for the delimiter), and the buffer is bounded: a stream that never
delimits holds at most ``max_record`` bytes, then is discarded up to the next delimiter.
"""

from __future__ import annotations


class DelimitedBuffer:
    """``split(data) -> (records, overflows)``: the records ``data`` completed, in order.

    A record is the bytes between two delimiters (possibly empty). A record longer than
    ``max_record`` is not returned; it counts as one overflow and the stream resyncs at
    the next delimiter.
    """

    def __init__(self, delimiter: bytes, max_record: int) -> None:
        if len(delimiter) != 1:
            raise ValueError("the delimiter must be one byte")
        if max_record < 1:
            raise ValueError(f"max_record must be >= 1, got {max_record}")
        self.delimiter = delimiter
        self.max_record = max_record
        self._buf = bytearray()  # the partial record since the last delimiter
        self._discarding = False  # overflowed: skip until the next delimiter

    @property
    def buffered(self) -> int:
        """Bytes held waiting for a delimiter (always <= ``max_record``)."""
        return len(self._buf)

    def split(self, data: bytes) -> tuple[list[bytes], int]:
        """The records ``data`` completes and how many overflowed (one ``bytes.split`` over ``data``)."""
        limit, buf = self.max_record, self._buf
        parts = data.split(self.delimiter)
        tail = parts.pop()  # the bytes after the last delimiter (all of ``data`` when there is none)
        overflows = 0
        if parts:
            if self._discarding:  # the overflowed record ends at the first delimiter
                self._discarding = False
                buf.clear()
                del parts[0]
            elif buf:
                buf += parts[0]
                parts[0] = bytes(buf)
                buf.clear()
            if parts and max(map(len, parts)) > limit:
                kept = [r for r in parts if len(r) <= limit]
                overflows += len(parts) - len(kept)
                parts = kept
        if tail and not self._discarding:
            if len(buf) + len(tail) > limit:
                buf.clear()
                self._discarding = True
                overflows += 1
            else:
                buf += tail
        return parts, overflows
