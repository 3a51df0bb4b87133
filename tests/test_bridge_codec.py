"""Wire protocol v1: COBS, CRC, encoder/decoder round trips, error accounting, CSV mode."""

from __future__ import annotations

import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alanet.firmware_bridge import cobs
from alanet.firmware_bridge.codec import (
    Decoder,
    Encoder,
    crc16,
    encode_frame,
    encode_hello,
    encode_raw_emg,
)
from alanet.firmware_bridge.csv_mode import CsvDecoder, format_frame, format_hello
from alanet.firmware_bridge.framing import DelimitedBuffer
from alanet.firmware_bridge.protocol import HEADER, Frame, Hello, RawEmg, hello_problem


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def frame(seq: int, t_ms: int | None = None) -> Frame:
    angles = tuple(f32(0.01 * seq + 0.1 * j) for j in range(13))
    emg = tuple(f32(1.0 + 0.5 * j + seq % 7) for j in range(4))
    return Frame(seq, seq * 17 if t_ms is None else t_ms, angles, emg)


def test_crc_check_value():
    assert crc16(b"123456789") == 0x29B1


@pytest.mark.parametrize("n", [0, 1, 253, 254, 255, 508, 509, 1000])
def test_cobs_round_trip_has_no_zero(n):
    for data in (bytes(n), bytes((i % 255) + 1 for i in range(n)), bytes(i % 7 for i in range(n))):
        enc = cobs.encode(data)
        assert 0 not in enc
        assert len(enc) <= cobs.max_encoded_len(n)
        assert cobs.decode(enc) == data


def test_cobs_rejects_bad_input():
    for bad in (b"\x05ab", b"\x02a\x00", b"\x00"):
        with pytest.raises(cobs.CobsError):
            cobs.decode(bad)


def test_round_trip_all_types_and_sizes():
    hello_wire = encode_hello(3, 1000, "wear-7", "2.1.0", raw_emg_rate_hz=1000.0)
    raw = [[f32(0.1 * i), -1.0, 2.5, f32(i / 3)] for i in range(60)]
    wire = hello_wire + encode_frame(frame(0)) + encode_raw_emg(9, 1010, 1000.0, raw) + encode_frame(frame(1))
    assert wire.count(0) == 4 and wire.endswith(b"\x00")
    assert len(encode_frame(frame(0))) <= 84  # 82 packet bytes + COBS + delimiter
    out = Decoder().feed(wire)
    assert out[0] == Hello(3, 1000, "wear-7", "2.1.0", 1, 13, 4, 60.0, 1000.0, "emopain-13a4e")
    assert out[1] == frame(0) and out[3] == frame(1)
    assert out[2] == RawEmg(9, 1010, 1000.0, tuple(tuple(r) for r in raw))


def test_byte_by_byte_equals_one_shot():
    wire = b"".join(encode_frame(frame(i)) for i in range(50))
    dec = Decoder()
    got = [p for i in range(len(wire)) for p in dec.feed(wire[i : i + 1])]
    assert got == Decoder().feed(wire) == [frame(i) for i in range(50)]


def test_one_corrupted_byte_loses_exactly_one_frame_and_resyncs():
    packets = [encode_frame(frame(i)) for i in range(10)]
    bad = bytearray(packets[4])
    bad[20] ^= 0x10
    if bad[20] == 0:  # keep it a same-packet error
        bad[20] = 0x55
    dec = Decoder()
    out = dec.feed(b"".join(packets[:4]) + bytes(bad) + b"".join(packets[5:]))
    assert [f.seq for f in out] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert dec.stats.crc_errors + dec.stats.framing_errors == 1
    assert dec.stats.resyncs == 1
    assert (dec.stats.gaps, dec.stats.lost) == (1, 1)


def test_garbage_before_first_delimiter_and_idle_zeros():
    dec = Decoder()
    out = dec.feed(b"\x13\x37garbage" + encode_frame(frame(5))[3:] + b"\x00\x00\x00" + encode_frame(frame(6)))
    assert out == [frame(6)]
    assert dec.stats.resyncs == 1


def test_bounded_buffer_on_a_stream_that_never_delimits():
    dec = Decoder(max_packet=256)
    for _ in range(2000):
        assert dec.feed(b"\x01\xff" * 500) == []
        assert dec.buffered <= dec.max_encoded
    assert dec.stats.framing_errors == 1  # one overflow, then skipping until 0x00
    assert dec.feed(b"\x00" + encode_frame(frame(1))) == [frame(1)]


def test_sequence_wrap_gap_duplicate_restart():
    last = 2**32 - 1
    seqs = [last - 2, last - 1, last, 0, 1, 1, 4, 2]
    dec = Decoder()
    out = dec.feed(b"".join(encode_frame(frame(s, 0)) for s in seqs))
    assert [f.seq for f in out] == [last - 2, last - 1, last, 0, 1, 4, 2]
    s = dec.stats
    assert (s.gaps, s.lost, s.duplicates, s.restarts) == (1, 2, 1, 1)


def test_crc_valid_but_malformed_or_unsupported_packets_are_counted():
    def seal(version, ptype, payload):
        body = HEADER.pack(version, ptype, 1, 2) + payload
        return cobs.encode(body + struct.pack("<H", crc16(body))) + b"\x00"

    nan_frame = struct.pack("<BB", 13, 4) + struct.pack("<17f", *([0.0] * 16 + [math.nan]))
    wire = (
        seal(1, 2, b"\x0d\x04" + b"\x00" * 10)  # too short for 17 floats
        + seal(1, 2, nan_frame)  # non-finite value
        + seal(1, 0x7F, b"")  # unknown type
        + seal(2, 2, struct.pack("<BB", 13, 4) + bytes(68))  # DATA of an unknown version
        + seal(1, 1, b"\x0d\x04\x00\x00" + struct.pack("<ff", 60, 0) + b"\x02\xff\xfe\x00\x00")  # bad UTF-8
    )
    dec = Decoder()
    assert dec.feed(wire) == []
    assert (dec.stats.malformed, dec.stats.unsupported, dec.stats.crc_errors) == (3, 2, 0)


def test_hello_of_a_newer_version_is_decoded_and_refused_by_name():
    dec = Decoder()
    (h,) = dec.feed(encode_hello(0, 0, "wear-9", "9.0", protocol_version=2))
    assert h.protocol_version == 2
    assert "protocol v2" in hello_problem(h) and "wear-9" in hello_problem(h)
    (h,) = dec.feed(encode_hello(0, 0, "wear-9", "1.0", layout="imu-9a0e", n_angles=9, n_emg=0))
    assert "unknown channel layout 'imu-9a0e'" in hello_problem(h)
    (h,) = dec.feed(encode_hello(0, 0, "wear-9", "1.0", n_angles=12))
    assert "needs 13 angles" in hello_problem(h)
    (h,) = dec.feed(encode_hello(0, 0, "wear-9", "1.0"))
    assert hello_problem(h) is None


def test_encoder_numbers_packets_and_rejects_oversize():
    enc = Encoder("dev", sample_rate_hz=60.0)
    wire = enc.hello(0) + enc.frame(0, [0.0] * 13, [1.0] * 4) + enc.frame(16, [0.0] * 13, [1.0] * 4)
    out = Decoder().feed(wire)
    assert [type(p).__name__ for p in out] == ["Hello", "Frame", "Frame"]
    assert [out[1].seq, out[2].seq] == [0, 1]
    with pytest.raises(ValueError, match="at most 32"):
        encode_hello(0, 0, "x" * 33, "fw")
    with pytest.raises(ValueError):
        encode_raw_emg(0, 0, 1000.0, [[1.0] * 4] * 61)


def test_never_raises_on_non_bytes_and_odd_input():
    dec = Decoder()
    assert dec.feed(None) == []  # type: ignore[arg-type]
    assert dec.feed(memoryview(encode_frame(frame(0)))) == [frame(0)]
    assert dec.feed(bytearray(b"\xff" * 3000 + b"\x00")) == []


# --------------------------------------------------------------------------- CSV mode


def test_csv_round_trip_hello_comments_and_errors():
    fr = [frame(i) for i in range(5)]
    h = Hello(0, 0, "uno", "0.3", 1, 13, 4, 60.0, 0.0, "emopain-13a4e")
    text = (
        b"# Arduino booting\r\n\r\n"
        + format_hello(h)
        + format_frame(fr[0], "%.9g").replace(b"\n", b"\r\n")
        + b"1,2,3\n"  # wrong field count
        + format_frame(fr[1], "%.9g")
        + b"x" * 600  # overlong line, dropped whole
        + b"\n"
        + format_frame(fr[3], "%.9g")
        + b"4,5," + b"nan," * 16 + b"1\n"  # not finite
        + format_frame(fr[4], "%.9g")[:-1]  # no newline yet
    )
    dec = CsvDecoder()
    out = [p for i in range(0, len(text), 7) for p in dec.feed(text[i : i + 7])]
    assert out[0] == h
    assert out[1:] == [fr[0], fr[1], fr[3]]
    assert (dec.stats.malformed, dec.stats.framing_errors) == (2, 1)
    assert (dec.stats.gaps, dec.stats.lost) == (1, 1)
    assert dec.feed(b"\n") == [fr[4]]
    assert dec.buffered == 0


def test_csv_never_raises_and_is_bounded():
    dec = CsvDecoder()
    for chunk in (b"\xff\xfe" * 1000, b"#hello,\xff\n", b"-1,2" + b",1" * 17 + b"\n", b"1,99999999999" + b",1" * 17 + b"\n"):
        assert dec.feed(chunk) == []
        assert dec.buffered <= dec.max_line


# --------------------------------------------------------------------------- properties

F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_cobs_property_round_trip(data):
    enc = cobs.encode(data)
    assert 0 not in enc and len(enc) <= cobs.max_encoded_len(len(data))
    assert cobs.decode(enc) == data


@settings(max_examples=300, deadline=None)
@given(
    seq=st.integers(0, 2**32 - 1),
    t_ms=st.integers(0, 2**32 - 1),
    angles=st.lists(F32, min_size=13, max_size=13),
    emg=st.lists(F32, min_size=4, max_size=4),
    split=st.integers(0, 90),
)
def test_frame_property_round_trip_any_split(seq, t_ms, angles, emg, split):
    fr = Frame(seq, t_ms, tuple(angles), tuple(emg))
    wire = encode_frame(fr)
    dec = Decoder()
    assert dec.feed(wire[:split]) + dec.feed(wire[split:]) == [fr]


def _split_one_record_at_a_time(state: dict, data: bytes, limit: int) -> tuple[list[bytes], int]:
    """The framing rule written out record by record (the spec ``DelimitedBuffer.split`` must meet)."""
    records, overflows, pos = [], 0, 0
    while pos < len(data):
        end = data.find(b"\x00", pos)
        if end < 0:
            if not state["discarding"]:
                if len(state["buf"]) + len(data) - pos > limit:
                    state["buf"], state["discarding"] = b"", True
                    overflows += 1
                else:
                    state["buf"] += data[pos:]
            break
        if state["discarding"]:
            state["buf"], state["discarding"] = b"", False
        else:
            record, state["buf"] = state["buf"] + data[pos:end], b""
            if len(record) > limit:
                overflows += 1
            else:
                records.append(record)
        pos = end + 1
    return records, overflows


def test_delimited_buffer_matches_the_record_by_record_rule():
    """Any bytes, any chunking, any bound: the same records, overflows and held bytes as the rule."""
    rng = random.Random(7)
    for _ in range(400):
        limit = rng.choice([1, 3, 20, 100])
        stream = bytes(rng.choice((0, 0, 1, 7, 255)) for _ in range(rng.randint(0, 400)))
        buf, state = DelimitedBuffer(b"\x00", limit), {"buf": b"", "discarding": False}
        pos = 0
        while pos < len(stream):
            step = rng.choice([1, 2, 5, 30, 200])
            chunk = stream[pos : pos + step]
            assert buf.split(chunk) == _split_one_record_at_a_time(state, chunk, limit)
            assert buf.buffered == len(state["buf"]) <= limit
            pos += step


def test_wire_bytes_counts_the_partial_frame_held_and_follows_the_layout():
    """``Decoder.wire_bytes(n)``: bytes still to come for n more DATA frames of the stream's layout."""
    enc = Encoder()
    one = enc.frame(0, [0.1] * 13, [0.2] * 4, seq=0)
    dec = Decoder()
    assert dec.wire_bytes(3) == 3 * len(one) and dec.wire_bytes(0) == 0
    dec.feed(one[:10])  # part of a frame held
    assert dec.wire_bytes(1) == len(one) - 10
    dec.feed(one[10:])
    assert dec.wire_bytes(2) == 2 * len(one)
    other = encode_frame(Frame(1, 17, (0.1,) * 3, (0.2,) * 2))  # another layout: the stream's size follows it
    dec.feed(other + other)
    assert dec.wire_bytes(1) == len(other)
