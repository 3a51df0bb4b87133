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
        records: list[bytes] = []
        overflows = 0
        delim, limit, buf = self.delimiter, self.max_record, self._buf
        pos, n = 0, len(data)
        while pos < n:
            end = data.find(delim, pos)
            if end < 0:  # no delimiter in the rest: keep it (bounded)
                if not self._discarding:
                    if len(buf) + n - pos > limit:
                        buf.clear()
                        self._discarding = True
                        overflows += 1
                    else:
                        buf += data[pos:]
                break
            if self._discarding:
                self._discarding = False
                buf.clear()
            else:
                if buf:
                    buf += data[pos:end]
                    record = bytes(buf)
                    buf.clear()
                else:
                    record = data[pos:end]
                if len(record) > limit:
                    overflows += 1
                else:
                    records.append(record)
            pos = end + 1
        return records, overflows
