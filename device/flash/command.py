"""Signed commands to a gateway (rollback): only the holder of a trusted key may command it. Sans-I/O.

Anyone who can publish to ``alanet/<gw>/cmd/rollback`` could otherwise flip a
gateway's models back and forth. A command is therefore signed with the same kind of
Ed25519 key that signs bundles, and a gateway obeys it only when:

- the signature verifies against one of its trusted keys (``model.trusted_keys``),
  over the exact bytes of the command's ``body``;
- the body names this gateway (a command for another gateway is not replayable here);
- the body's ``issued`` time is later than that of every command the gateway has
  obeyed before (kept in its state directory), so a recorded command cannot be
  played again. Only the sender's clock matters; a gateway without a real-time clock
  is fine.

A repeated delivery of a command the gateway has already answered gets the stored
answer (the sender re-sends until it hears back), without acting again.

Wire form (schema ``alanet.command/1``)::

    {"schema": "alanet.command/1",
     "body": "{\\"type\\":\\"rollback\\",\\"gateway\\":\\"ward3\\",\\"request\\":\\"<id>\\",\\"issued\\":1764000000.25}",
     "signature": {"algorithm": "Ed25519", "key_id": "...", "signature": "<base64>"}}

Unsigned commands (``{"schema": "alanet.flash/1", "request": "<id>"}``) are obeyed
only by a gateway with no trusted key and ``[flash] allow_unsigned = true`` (a bench
set-up), and are then not protected against replay beyond their request id.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

from alanet.device import signing
from alanet.device.flash.protocol import FLASH_SCHEMA, ID_RE, ProtocolError, dumps, loads

COMMAND_SCHEMA = "alanet.command/1"
COMMAND_TYPES = ("rollback",)
MAX_BODY = 1024


@dataclass(frozen=True)
class Command:
    """A command a gateway may act on (its signature already checked)."""

    type: str
    gateway: str | None  # None for an unsigned command
    request: str
    issued: float  # sender's UTC seconds; 0 for an unsigned command
    signed_by: str | None = None  # key id of the trusted key that signed it


def make_command(type: str, gateway: str, request: str, key: signing.KeySource | None,
                 issued: float | None = None) -> bytes:
    """The wire bytes of a command for ``gateway``, signed with ``key`` (unsigned when ``key`` is None)."""
    if type not in COMMAND_TYPES:
        raise ValueError(f"unknown command {type!r}")
    if key is None:
        return dumps({"schema": FLASH_SCHEMA, "request": request})
    body = json.dumps({"type": type, "gateway": gateway, "request": request,
                       "issued": round(time.time() if issued is None else issued, 6)},
                      separators=(",", ":"), allow_nan=False)
    sig = json.loads(signing.sign_bytes(body.encode(), key))
    return dumps({"schema": COMMAND_SCHEMA, "body": body, "signature": sig})


def read_command(payload: bytes, *, gateway: str, trusted_keys: Sequence[signing.KeySource],
                 allow_unsigned: bool) -> Command:
    """Parse and authenticate a command; ProtocolError says why it must be ignored.

    Does not check freshness: compare :attr:`Command.issued` with the last obeyed
    command's (see the module docstring) after looking up an earlier answer.
    """
    d = loads(payload, "command")
    if d.get("schema") == FLASH_SCHEMA and "body" not in d:
        if trusted_keys or not allow_unsigned:
            raise ProtocolError("command: unsigned; this gateway obeys only commands signed with a trusted key "
                                "(alanet flash --rollback --sign KEY)")
        req = d.get("request")
        if not isinstance(req, str) or not ID_RE.match(req):
            raise ProtocolError("command: request must be an id (letters, digits, '_', '-')")
        return Command("rollback", None, req, 0.0)
    if d.get("schema") != COMMAND_SCHEMA:
        raise ProtocolError(f"command: schema {str(d.get('schema'))[:40]!r} is not {COMMAND_SCHEMA}")
    body, sig = d.get("body"), d.get("signature")
    if not isinstance(body, str) or len(body) > MAX_BODY or not isinstance(sig, dict):
        raise ProtocolError("command: needs a body (JSON text) and a signature")
    if not trusted_keys:
        raise ProtocolError("command: signed, but this gateway has no trusted key to check it with")
    try:
        signed_by = signing.verify_bytes(body.encode(), json.dumps(sig).encode(), trusted_keys)
    except signing.SignatureError as exc:
        raise ProtocolError(f"command: {exc}") from None
    b: Any = loads(body.encode(), "command body")
    typ, gw, req, issued = b.get("type"), b.get("gateway"), b.get("request"), b.get("issued")
    if typ not in COMMAND_TYPES:
        raise ProtocolError(f"command: unknown type {str(typ)[:40]!r}")
    if gw != gateway:
        raise ProtocolError(f"command: for gateway {str(gw)[:64]!r}, not this one ({gateway!r})")
    if not isinstance(req, str) or not ID_RE.match(req):
        raise ProtocolError("command: request must be an id (letters, digits, '_', '-')")
    if isinstance(issued, bool) or not isinstance(issued, (int, float)) or not math.isfinite(issued):
        raise ProtocolError("command: issued must be a time in seconds")
    return Command(typ, gw, req, float(issued), signed_by)


def stale_problem(cmd: Command, last_issued: float) -> str | None:
    """Why a signed command is too old to obey (a replay), or None."""
    if cmd.gateway is not None and cmd.issued <= last_issued:
        return (f"command: issued {cmd.issued:.6f} is not after the last command obeyed ({last_issued:.6f}); "
                "a replayed or out-of-order command is ignored")
    return None
