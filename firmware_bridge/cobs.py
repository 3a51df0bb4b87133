"""Consistent Overhead Byte Stuffing (Cheshire & Baker, 1999), canonical form.

``encode`` removes every 0x00 from a packet at a cost of at most one byte per 254
(plus one), so 0x00 can delimit packets on the wire. The canonical form (the
reference encoder's) emits no trailing ``0x01`` after a final full 254-byte block;
the C encoder in ``c/alanet_wire.c`` produces exactly the same bytes.

:func:`decode` is the reference decoder (pure Python). :func:`fast_decode` is the
decoder the gateway's hot path uses: the C extension of the ``cobs`` package (MIT)
when it is installed and built, else :func:`decode` itself. Both accept and reject
exactly the same inputs and return the same bytes (tests/test_bridge_fuzz.py).
"""

from __future__ import annotations

from typing import Callable


class CobsError(ValueError):
    """The bytes are not a valid COBS encoding."""


def max_encoded_len(n: int) -> int:
    """Worst-case COBS length of ``n`` data bytes (without the 0x00 delimiter)."""
    return n + n // 254 + 1


def encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (no delimiter appended)."""
    out = bytearray()
    parts = bytes(data).split(b"\x00")
    last = len(parts) - 1
    for i, part in enumerate(parts):
        full = 0
        while len(part) - full * 254 >= 254:
            out.append(0xFF)
            out += part[full * 254 : (full + 1) * 254]
            full += 1
        rest = part[full * 254 :]
        if i == last and full and not rest:
            break  # canonical: no empty block after a final full block
        out.append(len(rest) + 1)
        out += rest
    return bytes(out)


def decode(enc: bytes) -> bytes:
    """Decode one COBS block sequence (without delimiter); raises ``CobsError``."""
    zero = bytes(enc).find(0)
    if zero >= 0:
        raise CobsError(f"zero byte at offset {zero}")
    out = bytearray()
    n = len(enc)
    i = 0
    while i < n:
        code = enc[i]
        end = i + code
        if end > n:
            raise CobsError(f"block at offset {i} runs past the end ({code - 1} bytes, {n - i - 1} left)")
        out += enc[i + 1 : end]
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def _c_decoder() -> tuple[Callable[[bytes], bytes], type[Exception]] | None:
    """The ``cobs`` package's C decoder and its error, or None (not installed, or built without its C part)."""
    try:
        from cobs import cobs as _cobs  # the PyPI package (absolute import), not this module
    except ImportError:
        return None
    if not getattr(_cobs, "_using_extension", False):
        return None  # its pure-Python fallback is no faster than ours
    return _cobs.decode, _cobs.DecodeError


_C = _c_decoder()
#: True when :func:`fast_decode` is the C decoder.
HAVE_C_DECODER = _C is not None
#: The fastest available decoder: same contract as :func:`decode`, raising one of ``FAST_ERRORS``.
fast_decode: Callable[[bytes], bytes] = _C[0] if _C is not None else decode
#: What :func:`fast_decode` raises on invalid input.
FAST_ERRORS: tuple[type[Exception], ...] = (CobsError, _C[1]) if _C is not None else (CobsError,)
