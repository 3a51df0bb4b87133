"""The chunked bundle transfer over MQTT: topics, messages and the sender's logic (sans-I/O).

Topics (``<gw>`` is the gateway id, ``<tid>`` the transfer id of one ``alanet flash`` run)::

    alanet/<gw>/cmd/flash/<tid>/begin       JSON offer            sender → gateway  QoS 1
    alanet/<gw>/cmd/flash/<tid>/chunk/<i>   raw archive bytes     sender → gateway  QoS 1
    alanet/<gw>/cmd/flash/<tid>/end         JSON offer (again)    sender → gateway  QoS 1
    alanet/<gw>/cmd/rollback                signed command        sender → gateway  QoS 1
    alanet/<gw>/flash/<tid>                 JSON reply            gateway → sender  QoS 1
    alanet/<gw>/model                       JSON model report     gateway, retained

The offer (schema ``alanet.flash/1``) names the archive's size, SHA-256, chunk size
and chunk count. ``end`` carries the offer too, so a gateway that missed ``begin``
still knows what to expect; every message is idempotent. On ``end`` the gateway
answers ``missing`` (the ranges of chunk indices it lacks, ``[[start, end), ...]``) or,
once it has them all and has verified and installed the bundle (or refused it),
``result``.

Bounds, so that a few small messages cannot make a gateway allocate much: chunks are
at least ``MIN_CHUNK`` bytes (unless the archive is one chunk), at most ``MAX_CHUNKS``
of them, the archive at most ``MAX_ARCHIVE`` bytes, and a gateway stages at most
``MAX_ACTIVE_TRANSFERS`` transfers and ``MAX_STAGED_BYTES`` at a time. The rollback command is signed
(:mod:`~alanet.device.flash.command`). It sends ``progress``
while chunks arrive. The sender re-sends what is missing and re-sends ``end`` when no
answer comes (after a reconnect, or ``retry_s``), so a broker restart in the middle
of a transfer only costs a few re-sent chunks.

:class:`GatewaySend` is the sender's state machine for one gateway: it takes replies,
reconnects and clock ticks and returns the messages to publish; no I/O.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

FLASH_SCHEMA = "alanet.flash/1"
REPLY_SCHEMA = "alanet.flash-reply/1"
MODEL_SCHEMA = "alanet.model/1"
DEFAULT_CHUNK = 32 * 1024
MIN_CHUNK = 1024
MAX_CHUNK = 256 * 1024
MAX_CHUNKS = 4096
MAX_ARCHIVE = 64 << 20
MAX_COMMAND_BYTES = 4096  # offers and commands are small JSON; larger payloads are not even parsed
MAX_MISSING_LISTED = 512  # ranges per ``missing`` reply
MAX_ACTIVE_TRANSFERS = 2  # transfers a gateway stages at once
MAX_STAGED_BYTES = 96 << 20  # archive bytes (by their offers) a gateway stages at once
TRANSFER_IDLE_S = 600.0  # a staged transfer silent this long gives its place to a new one
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Message = tuple[str, bytes]  # (topic, payload)


class ProtocolError(ValueError):
    """A malformed flash message (the gateway answers it with a refusal)."""


def cmd_prefix(gateway: str) -> str:
    return f"alanet/{gateway}/cmd"


def flash_filter(gateway: str) -> str:
    """Subscription filter of the gateway's flash commands."""
    return f"alanet/{gateway}/cmd/flash/#"


def rollback_topic(gateway: str) -> str:
    return f"alanet/{gateway}/cmd/rollback"


def begin_topic(gateway: str, tid: str) -> str:
    return f"alanet/{gateway}/cmd/flash/{tid}/begin"


def end_topic(gateway: str, tid: str) -> str:
    return f"alanet/{gateway}/cmd/flash/{tid}/end"


def chunk_topic(gateway: str, tid: str, index: int) -> str:
    return f"alanet/{gateway}/cmd/flash/{tid}/chunk/{index}"


def reply_topic(gateway: str, tid: str) -> str:
    return f"alanet/{gateway}/flash/{tid}"


def model_topic(gateway: str) -> str:
    return f"alanet/{gateway}/model"


def status_topic(gateway: str) -> str:
    return f"alanet/{gateway}/status"


@dataclass(frozen=True)
class Command:
    """A parsed command topic: kind ``begin``/``chunk``/``end``/``rollback``."""

    kind: str
    transfer: str | None = None
    index: int | None = None


def parse_command(gateway: str, topic: str) -> Command | None:
    """The command a topic carries for ``gateway``; None if it is not one (or malformed)."""
    pre = f"alanet/{gateway}/cmd/"
    if not topic.startswith(pre):
        return None
    parts = topic[len(pre):].split("/")
    if parts == ["rollback"]:
        return Command("rollback")
    if len(parts) < 3 or parts[0] != "flash" or not ID_RE.match(parts[1]):
        return None
    tid = parts[1]
    if len(parts) == 3 and parts[2] in ("begin", "end"):
        return Command(parts[2], tid)
    if len(parts) == 4 and parts[2] == "chunk" and parts[3].isdigit() and len(parts[3]) <= 9:
        return Command("chunk", tid, int(parts[3]))
    return None


def dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def loads(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_COMMAND_BYTES:
        raise ProtocolError(f"{what}: {len(payload)} bytes, at most {MAX_COMMAND_BYTES}")
    try:
        d = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"{what}: not JSON ({str(exc)[:100]})") from None
    if not isinstance(d, dict):
        raise ProtocolError(f"{what}: not a JSON object")
    return d


@dataclass(frozen=True)
class Offer:
    """What the sender is about to send: one bundle archive in ``chunks`` pieces."""

    transfer: str
    size: int
    sha256: str
    chunk_size: int
    chunks: int
    name: str = ""  # model id, informational

    def to_dict(self) -> dict[str, Any]:
        return {"schema": FLASH_SCHEMA, "transfer": self.transfer, "size": self.size, "sha256": self.sha256,
                "chunk_size": self.chunk_size, "chunks": self.chunks, "name": self.name}

    def to_bytes(self) -> bytes:
        return dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, payload: bytes, transfer: str) -> "Offer":
        """Parse and check an offer; ProtocolError names the bad field."""
        d = loads(payload, "offer")
        if d.get("schema") != FLASH_SCHEMA:
            raise ProtocolError(f"offer: schema {d.get('schema')!r} is not {FLASH_SCHEMA}")
        if d.get("transfer") != transfer:
            raise ProtocolError(f"offer: transfer {d.get('transfer')!r} does not match the topic's {transfer!r}")

        def integer(key: str, lo: int, hi: int) -> int:
            v = d.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ProtocolError(f"offer: {key} must be an integer in {lo}..{hi}, got {v!r}")
            return v

        size = integer("size", 1, MAX_ARCHIVE)
        chunk = integer("chunk_size", 1, MAX_CHUNK)
        n = integer("chunks", 1, MAX_CHUNKS)
        if n != math.ceil(size / chunk):
            raise ProtocolError(f"offer: chunks {n} does not match size {size} / chunk_size {chunk}")
        if chunk < MIN_CHUNK and n > 1:
            raise ProtocolError(f"offer: chunk_size must be at least {MIN_CHUNK} (or hold the whole archive), got {chunk}")
        sha = d.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ProtocolError("offer: sha256 must be 64 lower-case hex digits")
        return cls(transfer, size, sha, chunk, n, str(d.get("name", ""))[:128])

    def chunk_len(self, index: int) -> int:
        """Expected length of chunk ``index``."""
        if index < self.chunks - 1:
            return self.chunk_size
        return self.size - self.chunk_size * (self.chunks - 1)


def make_offer(transfer: str, archive: bytes, chunk_size: int = DEFAULT_CHUNK, name: str = "") -> Offer:
    """The offer for ``archive``; the chunk size grows when needed to stay within ``MAX_CHUNKS``."""
    import hashlib

    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk size must be in {MIN_CHUNK}..{MAX_CHUNK}, got {chunk_size}")
    if not 1 <= len(archive) <= MAX_ARCHIVE:
        raise ValueError(f"archive of {len(archive)} bytes (at most {MAX_ARCHIVE})")
    chunk_size = max(chunk_size, math.ceil(len(archive) / MAX_CHUNKS))
    return Offer(transfer, len(archive), hashlib.sha256(archive).hexdigest(), chunk_size,
                 math.ceil(len(archive) / chunk_size), name)


def missing_ranges(have: Iterable[int], n: int, limit: int = MAX_MISSING_LISTED) -> list[list[int]]:
    """The indices in ``range(n)`` not in ``have`` as half-open ranges ``[start, end)``, in order, at most ``limit``.

    Works on what is held (sorted), never on ``range(n)``: the cost follows the chunks received.
    """
    out: list[list[int]] = []
    nxt = 0
    for i in sorted(i for i in set(have) if 0 <= i < n):
        if i > nxt:
            out.append([nxt, i])
            if len(out) >= limit:
                return out
        nxt = i + 1
    if nxt < n:
        out.append([nxt, n])
    return out[:limit]


def count_missing(ranges: Iterable[Iterable[int]]) -> int:
    return sum(b - a for a, b in ranges)


def reply(gateway: str, transfer: str, type: str, /, **fields: Any) -> bytes:
    """A gateway → sender reply (``progress``, ``missing``, ``result``)."""
    d = {"schema": REPLY_SCHEMA, "gateway": gateway, "transfer": transfer, "type": type}
    d.update({k: v for k, v in fields.items() if k not in d})
    return dumps(d)


@dataclass
class GatewaySend:
    """Sender side of one transfer to one gateway (pure: feed events, publish what it returns).

    ``rollback``: instead of an archive, ask the gateway to go back to its previous bundle.
    """

    gateway: str
    offer: Offer | None
    chunk: Callable[[int], bytes] = field(repr=False, default=lambda i: b"")
    retry_s: float = 3.0
    command: bytes = field(repr=False, default=b"")  # the (signed) rollback command, when ``offer`` is None
    state: str = "new"  # new → waiting → done
    received: int = 0
    result: dict[str, Any] | None = None
    resent: int = 0
    last_sent: float = 0.0
    last_heard: float = 0.0
    replies: int = 0
    rollback_request: str | None = None

    @property
    def transfer(self) -> str:
        return self.offer.transfer if self.offer else ""

    @property
    def done(self) -> bool:
        return self.state == "done"

    def _end(self) -> list[Message]:
        assert self.offer is not None
        return [(end_topic(self.gateway, self.offer.transfer), self.offer.to_bytes())]

    def start(self, now: float, rollback_request: str | None = None) -> list[Message]:
        """Everything to publish first: begin, every chunk, end (or the rollback command)."""
        self.state, self.last_sent, self.last_heard = "waiting", now, now
        if self.offer is None:
            assert rollback_request is not None
            self.rollback_request = rollback_request
            return [(rollback_topic(self.gateway), self.command)]
        o = self.offer
        msgs: list[Message] = [(begin_topic(self.gateway, o.transfer), o.to_bytes())]
        msgs += [(chunk_topic(self.gateway, o.transfer, i), self.chunk(i)) for i in range(o.chunks)]
        return msgs + self._end()

    def on_reply(self, d: Mapping[str, Any], now: float) -> list[Message]:
        """React to a reply from the gateway."""
        if self.done:
            return []
        self.last_heard = now
        self.replies += 1
        kind = d.get("type")
        if isinstance(d.get("received"), int):
            self.received = max(self.received, int(d["received"]))
        if kind == "result":
            self.state = "done"
            self.result = dict(d)
            if self.offer is not None and d.get("state") == "active":
                self.received = self.offer.chunks
            return []
        if kind == "missing" and self.offer is not None:
            idx = []
            for r in d.get("missing", []):
                if isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) for v in r):
                    idx.extend(range(max(r[0], 0), min(r[1], self.offer.chunks)))
            self.resent += len(idx)
            self.last_sent = now
            return [(chunk_topic(self.gateway, self.offer.transfer, i), self.chunk(i)) for i in idx] + self._end()
        return []

    def on_reconnect(self, now: float) -> list[Message]:
        """After the sender's own reconnect: ask again where the gateway stands."""
        if self.done:
            return []
        self.last_sent = now
        if self.offer is None:
            return self.start(now, self.rollback_request)
        return self._end()

    def on_tick(self, now: float) -> list[Message]:
        """Re-send ``end`` (or the rollback) when nothing has been heard for ``retry_s``."""
        if self.done or self.state != "waiting":
            return []
        if now - max(self.last_sent, self.last_heard) < self.retry_s:
            return []
        self.retry_s = min(self.retry_s * 2, 30.0)  # back off while the gateway stays silent
        return self.on_reconnect(now)


def now() -> float:
    return time.monotonic()
