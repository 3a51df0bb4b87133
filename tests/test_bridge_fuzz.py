"""Fuzzing the decoders: >= 100k random and mutated streams, no exception, nothing corrupt accepted.

Each hypothesis example drives a batch of streams from a seeded RNG (so the whole run
stays well under a minute), plus hypothesis-drawn raw byte strings it can shrink.
Properties, for every stream:
- ``feed`` never raises, and the buffer stays under its bound;
- every accepted object is one that was encoded into the stream (mutated streams),
  and re-encodes to wire bytes that occur in the input (any stream);
- random bytes yield nothing; clean streams decode exactly, however they are chunked.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alanet.firmware_bridge import cobs
from alanet.firmware_bridge.codec import Decoder, Encoder, crc16, encode_packet
from alanet.firmware_bridge.csv_mode import CsvDecoder, format_frame
from alanet.firmware_bridge.protocol import HEADER, MAX_PACKET, SEQ_MOD, Frame, Hello, RawEmg, frame_blocks, values_in_bounds

COUNT = {"streams": 0}
MUTATED_EXAMPLES, MUTATED_PER_EXAMPLE = 700, 100
RANDOM_EXAMPLES, RANDOM_PER_EXAMPLE = 600, 40
CRAFTED_EXAMPLES = 1500


def _f32(rng: random.Random) -> float:
    while True:
        v = struct.unpack("<f", struct.pack("<I", rng.getrandbits(32)))[0]
        if v == v and abs(v) != float("inf"):
            return v


def _pool(n: int = 240) -> list[Frame | Hello | RawEmg]:
    rng = random.Random(1234)
    objs: list[Frame | Hello | RawEmg] = []
    for i in range(n):
        kind = rng.random()
        seq = rng.choice([i, 2**32 - 1 - i, rng.getrandbits(32)])
        if kind < 0.8:
            vals = [_f32(rng) if rng.random() < 0.3 else struct.unpack("<f", struct.pack("<f", rng.uniform(-3, 3)))[0] for _ in range(17)]
            if rng.random() < 0.2:
                vals = [0.0] * 17  # many zeros: many COBS blocks
            objs.append(Frame(seq, rng.getrandbits(32), tuple(vals[:13]), tuple(vals[13:])))
        elif kind < 0.9:
            objs.append(Hello(seq, rng.getrandbits(32), f"dev-{i}", "fw-1", 1, 13, 4, 60.0, rng.choice([0.0, 1000.0]), "emopain-13a4e"))
        else:
            n_s = rng.randint(1, 60)
            objs.append(RawEmg(seq, rng.getrandbits(32), 1000.0, tuple(tuple(_f32(rng) for _ in range(4)) for _ in range(n_s))))
    return objs


POOL = _pool()
WIRE = [encode_packet(o) for o in POOL]
KNOWN = set(POOL)


def _mutate(rng: random.Random, data: bytearray) -> bytearray:
    for _ in range(rng.randint(1, 4)):
        n = len(data)
        op = rng.randrange(8)
        if n == 0 or op == 0:  # insert random bytes
            pos = rng.randint(0, n)
            data[pos:pos] = rng.randbytes(rng.randint(1, 20))
        elif op == 1:  # flip one bit
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 2:  # replace a byte
            data[rng.randrange(n)] = rng.randrange(256)
        elif op == 3:  # delete a range
            pos = rng.randrange(n)
            del data[pos : pos + rng.randint(1, 40)]
        elif op == 4:  # duplicate a range
            pos = rng.randrange(n)
            data[pos:pos] = data[pos : pos + rng.randint(1, 120)]
        elif op == 5:  # insert a delimiter
            data.insert(rng.randint(0, n), 0)
        elif op == 6:  # remove a delimiter (merges two packets)
            zeros = [i for i, b in enumerate(data) if b == 0]
            if zeros:
                del data[rng.choice(zeros)]
        else:  # truncate
            del data[rng.randrange(n) :]
    return data


def _feed_chunked(dec, data: bytes, rng: random.Random) -> list:
    out = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 64, 500, len(data)])
        out += dec.feed(data[pos : pos + step])
        assert dec.buffered <= getattr(dec, "max_encoded", getattr(dec, "max_line", 0))
        pos += step
    return out


def _check_reencodes(out: list, stream: bytes) -> None:
    for obj in out:
        wire = encode_packet(obj)
        assert wire[:-1] in stream, f"accepted {obj!r} that is not in the stream"


def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck), derandomize=True)


@fuzz(MUTATED_EXAMPLES)
@given(seed=st.integers(0, 2**64 - 1))
def test_mutated_streams_never_accept_a_corrupt_packet(seed):
    rng = random.Random(seed)
    for _ in range(MUTATED_PER_EXAMPLE):
        picks = [rng.randrange(len(POOL)) for _ in range(rng.randint(0, 6))]
        clean = b"".join(WIRE[i] for i in picks)
        mutated = rng.random() < 0.9
        stream = bytes(_mutate(rng, bytearray(clean))) if mutated else clean
        dec = Decoder(max_packet=rng.choice([1024, 1024, 200]))
        out = _feed_chunked(dec, stream, rng)
        COUNT["streams"] += 1
        for obj in out:
            assert obj in KNOWN, f"accepted a packet that was never encoded: {obj!r}"
        if not mutated and dec.max_packet == 1024:
            # Exact decoding of a clean stream, duplicates of the previous seq excepted.
            assert len(out) + dec.stats.duplicates + dec.stats.raw_duplicates == len(picks)
            assert dec.stats.resyncs == 0


@fuzz(RANDOM_EXAMPLES)
@given(data=st.binary(max_size=3000), seed=st.integers(0, 2**64 - 1))
def test_random_bytes_yield_nothing(data, seed):
    rng = random.Random(seed)
    streams = [data] + [rng.randbytes(rng.randint(0, 2000)) for _ in range(RANDOM_PER_EXAMPLE)]
    # Zero-rich and 0x01-rich noise exercise the COBS paths more than uniform bytes.
    streams += [bytes(rng.choice((0, 1, 2, 0xFF, rng.randrange(256))) for _ in range(rng.randint(0, 600))) for _ in range(5)]
    for s in streams:
        dec = Decoder()
        assert _feed_chunked(dec, s, rng) == []
        csv = CsvDecoder()
        _feed_chunked(csv, s, rng)
        COUNT["streams"] += 1


@fuzz(CRAFTED_EXAMPLES)
@given(
    version=st.sampled_from([0, 1, 1, 1, 2, 255]),
    ptype=st.sampled_from([0, 1, 2, 3, 4, 255]),
    seq=st.integers(0, 2**32 - 1),
    payload=st.one_of(
        st.binary(max_size=1100),
        st.builds(lambda a, b, rest: bytes([a, b]) + rest, st.integers(0, 20), st.integers(0, 20), st.binary(max_size=120)),
        st.builds(lambda n_ch, n_s, rest: struct.pack("<fBB", 1000.0, n_ch, n_s) + rest, st.integers(0, 8), st.integers(0, 70), st.binary(max_size=1000)),
    ),
    good_crc=st.booleans(),
)
def test_crafted_packets_with_valid_crc_are_parsed_strictly(version, ptype, seq, payload, good_crc):
    """Correct CRC, arbitrary payload: accepted only if it re-encodes to the same bytes."""
    body = HEADER.pack(version, ptype, seq, 7) + payload
    crc = crc16(body) if good_crc else crc16(body) ^ 0x0101
    wire = cobs.encode(body + struct.pack("<H", crc)) + b"\x00"
    dec = Decoder()
    out = dec.feed(wire)
    assert len(out) <= 1
    if not good_crc:
        assert out == []
    _check_reencodes(out, wire)
    COUNT["streams"] += 1


# Frames of other channel counts (valid packets a gateway drops later), so the batch path's layout switch is fuzzed too.
OTHER_LAYOUTS = [Frame(i, 5 * i, tuple(float(k) for k in range(na)), tuple(0.5 for _ in range(ne)))
                 for i, (na, ne) in enumerate([(3, 2), (0, 0), (13, 3), (14, 3), (13, 4), (20, 20)])]
# Valid CRC, non-finite values: malformed, in the batch layout and in others.
NON_FINITE = [Frame(7, 7, (float("nan"),) + (0.0,) * 12, (0.0,) * 4), Frame(8, 8, (0.0,) * 13, (0.0, 0.0, float("inf"), 1.0)),
              Frame(9, 9, (float("-inf"),) * 3, (0.0,) * 2)]
DIFF_WIRE = WIRE + [encode_packet(f) for f in OTHER_LAYOUTS + NON_FINITE]


def _python_cobs(monkeypatch) -> None:
    """The batch path with the pure-Python COBS decoder (the fallback when the C one is missing)."""
    monkeypatch.setattr(cobs, "fast_decode", cobs.decode)
    monkeypatch.setattr(cobs, "FAST_ERRORS", (cobs.CobsError,))


def _vetted_rows(b) -> bool:
    e = 2 + b.n_angles
    return all(values_in_bounds(r[2:e], r[e:]) for r in b.rows) and \
        all((r[0] - q[0]) % SEQ_MOD == 1 for q, r in zip(b.rows, b.rows[1:]))


def test_a_block_is_vetted_only_when_every_row_is_in_bounds():
    """``FrameBlock.vetted`` on both decode paths (a few packets, a whole read): one angle past 2*pi
    (even by less than float32 rounding of the bound) or one huge sEMG value clears it."""
    enc = Encoder()
    over = float(np.float32(2 * np.pi))  # 2*pi rounded to float32 lies above 2*pi: out of bounds

    def vetted(n: int, bad: tuple | None) -> bool:
        frames = []
        for k in range(n):
            a, m = [0.1] * 13, [0.5] * 4
            if bad is not None and k == n // 2:
                (a if bad[0] == "a" else m)[0] = bad[1]
            frames.append(enc.frame(k, a, m, seq=k))
        dec = Decoder()
        dec.feed(enc.hello(0))
        blocks = dec.feed_blocks(b"".join(frames))
        assert len(blocks) == 1 and len(blocks[0]) == n
        return blocks[0].vetted

    for n in (5, 40):  # the few-packet path and the whole-read path
        assert vetted(n, None)
        assert not vetted(n, ("a", 7.0)) and not vetted(n, ("a", over)) and not vetted(n, ("m", 2e5))
        assert vetted(n, ("a", -6.28)) and vetted(n, ("m", -9.9e4))


def test_a_whole_read_hands_its_frames_over_as_values():
    """A whole read's frames come as one float64 array (no row tuples built): its rows, made on demand,
    equal the reference decoder's frames, seq and t_ms as ints; ``array()`` gives the same numbers for a
    block of row tuples; a non-finite value anywhere sends the read to the reference path (counted)."""
    from alanet.firmware_bridge.protocol import FrameBlock

    enc = Encoder()
    frames = [enc.frame(1000 + 17 * k, [0.01 * k + 0.1 * j for j in range(13)], [1e-3 * (k + 1)] * 4, seq=SEQ_MOD - 5 + k)
              for k in range(30)]  # seq wraps inside the read
    dec, ref = Decoder(), Decoder(batch=False)
    blocks, want = dec.feed_blocks(b"".join(frames)), ref.feed(b"".join(frames))
    assert len(blocks) == 1 and blocks[0].values is not None and blocks[0].vetted
    b = blocks[0]
    assert b.values.dtype == np.float64 and b.values.shape == (30, 2 + 13 + 4) and b.array() is b.values
    assert b.frames() == want and all(type(r[0]) is int and type(r[1]) is int for r in b.rows)
    rows = FrameBlock(13, 4, [tuple(r) for r in b.rows])
    assert rows == b and np.array_equal(rows.array(), b.values) and len(rows) == len(b) == 30
    with pytest.raises(ValueError):
        FrameBlock(13, 4)
    bad = list(frames)
    bad[17] = enc.frame(0, [0.1] * 13, [float("inf")] + [0.5] * 3, seq=SEQ_MOD - 5 + 17)
    _same_decoding(b"".join(bad), random.Random(3), MAX_PACKET)
    dec = Decoder()
    got = dec.feed_blocks(b"".join(bad))
    assert dec.stats.malformed == 1 and sum(len(x) for x in got) == 29


@pytest.mark.parametrize("na, ne", [(0, 0), (0, 4), (13, 0)])
def test_a_layout_without_values_decodes_in_later_whole_reads(na, ne):
    """The first read switches the decoder to a layout with no angles or no sEMG (or neither); the next
    whole read of that layout is decoded like the reference, nothing raised."""
    frames = [encode_packet(Frame(k, 17 * k, (0.1,) * na, (10.0,) * ne)) for k in range(40)]
    dec, ref = Decoder(), Decoder(batch=False)
    for part in (b"".join(frames[:3]), b"".join(frames[3:])):
        assert dec.feed(part) == ref.feed(part)
    assert dec.stats == ref.stats and dec.stats.frames == 40
    blk = Decoder()
    blocks = blk.feed_blocks(b"".join(frames[:3])) + blk.feed_blocks(b"".join(frames[3:]))
    assert sum(len(b) for b in blocks) == 40 and blk.stats == ref.stats


@pytest.mark.parametrize("na, ne", [(0, 0), (0, 4), (13, 0), (3, 2), (20, 20)])
@pytest.mark.parametrize("run", [2, 20])
def test_runs_of_any_layout_decode_as_the_reference(na, ne, run):
    """Runs of consecutive DATA frames of every layout (also with no angles or no sEMG, which the
    pipeline never vets) take the fast paths: the same packets and counters as the reference, no error."""
    frames = [encode_packet(Frame(k, 17 * k, tuple(0.1 * j for j in range(na)), (10.0,) * ne)) for k in range(2 * run)]
    _same_decoding(b"".join(frames), random.Random(run), MAX_PACKET)
    stream = b"".join(frames)
    blocks = Decoder().feed_blocks(stream[: len(stream) // 2]) + Decoder().feed_blocks(stream)
    assert all(not getattr(b, "vetted", False) for b in blocks) or (na and ne)


def _same_decoding(stream: bytes, rng: random.Random, max_packet: int) -> None:
    """The batch path, its frame-block form (``feed_blocks``) and the reference path give the same packets,
    counters and buffer, read by read."""
    fast, blk, ref = Decoder(max_packet), Decoder(max_packet), Decoder(max_packet, batch=False)
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 7, 64, 500, 4096, len(stream)])
        chunk = stream[pos : pos + step]
        got, want, blocks = fast.feed(chunk), ref.feed(chunk), blk.feed_blocks(chunk)
        assert got == want and repr(got) == repr(want)
        assert blocks == frame_blocks(want)
        for b in blocks:
            if getattr(b, "vetted", False):  # the decoder's promise: in bounds, finite, seq + 1 each
                assert _vetted_rows(b), b
        assert fast.buffered == ref.buffered == blk.buffered
        pos += step
    assert fast.stats == ref.stats == blk.stats
    assert fast.last_hello == ref.last_hello == blk.last_hello


@pytest.mark.parametrize("c_cobs", [True, False], ids=["c-cobs", "python-cobs"])
def test_batch_path_matches_reference(c_cobs, monkeypatch):
    """Mutated streams (all packet types, several DATA layouts) and garbage: batch == reference, counter for counter."""
    if c_cobs and not cobs.HAVE_C_DECODER:
        pytest.skip("the cobs package's C decoder is not installed")
    if not c_cobs:
        _python_cobs(monkeypatch)
    rng = random.Random(14)
    for i in range(1500 if c_cobs else 300):
        picks = [rng.randrange(len(DIFF_WIRE)) for _ in range(rng.randint(0, 40))]
        stream = b"".join(DIFF_WIRE[k] for k in picks)
        if i % 4:
            stream = bytes(_mutate(rng, bytearray(stream)))
        if i % 10 == 0:
            stream = rng.randbytes(rng.randint(0, 2000)) + stream
        _same_decoding(stream, rng, rng.choice([1024, 1024, 200, 60]))
    for i in range(200 if c_cobs else 50):  # runs of consecutive frames (the common read), across the seq wrap
        seq, parts = rng.choice([0, 2**32 - 30, rng.getrandbits(32)]), []
        for _ in range(rng.randint(1, 150)):
            u = rng.random()
            seq = (seq + (0 if u < 0.02 else rng.randint(2, 9) if u < 0.04 else -rng.randint(1, 99) if u < 0.05 else 1)) % 2**32
            vals = [0.0 if u < 0.1 else rng.uniform(-3, 3) for _ in range(17)]
            if u > 0.995:
                vals[rng.randrange(17)] = float("nan")
            parts.append(encode_packet(Frame(seq, seq * 17 % 2**32, tuple(vals[:13]), tuple(vals[13:]))))
        stream = b"".join(parts)
        _same_decoding(bytes(_mutate(rng, bytearray(stream))) if i % 5 == 0 else stream, rng, 1024)


@fuzz(300)
@given(data=st.binary(max_size=600))
def test_c_cobs_decoder_matches_reference(data):
    """The C COBS decoder accepts and rejects what the reference does, with the same bytes."""
    if not cobs.HAVE_C_DECODER:
        pytest.skip("the cobs package's C decoder is not installed")
    for enc in (data, data.replace(b"\x00", b"\x01"), cobs.encode(data)):
        try:
            want = cobs.decode(enc)
        except cobs.CobsError:
            with pytest.raises(cobs.FAST_ERRORS):
                cobs.fast_decode(enc)
        else:
            assert cobs.fast_decode(enc) == want


@fuzz(300)
@given(seed=st.integers(0, 2**64 - 1))
def test_csv_mutated_lines_never_raise(seed):
    rng = random.Random(seed)
    for _ in range(20):
        frames = [POOL[i] for i in range(rng.randint(0, 5)) if isinstance(POOL[i], Frame)]
        stream = bytes(_mutate(rng, bytearray(b"".join(format_frame(f, "%.9g") for f in frames))))
        dec = CsvDecoder()
        for obj in _feed_chunked(dec, stream, rng):
            assert isinstance(obj, (Frame, Hello))
        COUNT["streams"] += 1


def test_fuzz_volume_reached():
    """Runs last in this module: the streams above add up to at least 100k."""
    if COUNT["streams"] == 0:
        pytest.skip("only meaningful when the whole module runs")
    assert COUNT["streams"] >= 100_000, COUNT
