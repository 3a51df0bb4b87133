"""``alanet flash``: send a bundle to gateways over MQTT, or install it into a state directory.

Over MQTT (``--broker URL --gateway ID … | --all``): the bundle (a directory is packed
first) goes to every gateway in chunks, QoS 1, following
:mod:`~alanet.device.flash.protocol`. The sender's session is persistent (MQTT 5,
session expiry), paho re-sends unacknowledged messages after a reconnect and the
sender re-sends whatever a gateway reports missing, so a broker restart in the middle
only slows the transfer. One progress bar per gateway (chunks the gateway has
confirmed); at the end a fleet summary: took it / refused (why) / no answer in time.
Exit status 0 only when every gateway took the bundle.

``--to PATH`` installs into a gateway's state directory (or a mounted SD card holding
one) with the same verification; ``--rollback`` goes back to the previous bundle.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import paho.mqtt.client as mqtt

from alanet.device.flash import command as C
from alanet.device.flash import protocol as P
from alanet.device.flash.agent import as_broker
from alanet.device.mqtt_link import connect_async, make_client
from alanet.errors import InputError

log = logging.getLogger("alanet.flash")

TOOK, REFUSED, NO_ANSWER = "took it", "refused", "no answer"


@dataclass(frozen=True)
class GatewayOutcome:
    """What one gateway did with the bundle."""

    gateway: str
    status: str  # TOOK | REFUSED | NO_ANSWER
    model: str | None = None  # model running there afterwards (when known)
    reason: str | None = None
    received: int = 0
    chunks: int = 0
    resent: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == TOOK


def read_archive(bundle: str | Path, *, plain: bool = False) -> tuple[bytes, str]:
    """(archive bytes, model id) of a bundle directory (packed here: xz, or a plain tar with
    ``plain`` for gateways that predate xz archives) or archive file. An archive file is
    unpacked first with the gateway's own rules (:func:`~alanet.device.bundle.unpack`), so
    one every gateway would refuse is refused here, before it is sent."""
    from alanet.device.bundle import MANIFEST_FILE, BundleError, pack, unpack

    p = Path(bundle)
    with tempfile.TemporaryDirectory(prefix="alanet-flash-") as tmp:
        if p.is_dir():
            src = pack(p, Path(tmp) / "bundle.tar.xz", compress=not plain)
        elif p.is_file():
            src = p
        else:
            raise InputError(f"{p}: no such bundle")
        size = src.stat().st_size
        if not 0 < size <= P.MAX_ARCHIVE:
            raise InputError(f"{p}: archive of {size} bytes (at most {P.MAX_ARCHIVE})")
        try:
            manifest = json.loads((unpack(src, Path(tmp) / "unpacked") / MANIFEST_FILE).read_bytes())
        except (BundleError, OSError, ValueError) as exc:
            raise BundleError(f"{p}: not a bundle archive ({str(exc).replace(str(src), 'archive')})") from None
        data = src.read_bytes()
    name = str(manifest.get("model_id", "")) if isinstance(manifest, dict) else ""
    return data, name


class _Client:
    """The sender's MQTT connection: callbacks only queue events for the caller's loop."""

    def __init__(self, broker: Any, tid: str, reply_filter: str | None, ca_file: str | None = None) -> None:
        self.broker = as_broker(broker)
        if ca_file:
            from dataclasses import replace

            self.broker = replace(self.broker, ca_file=ca_file)
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.c = make_client(self.broker, f"alanet-flash-{tid}", protocol="5", persistent=True, reconnect=(0.2, 5),
                             max_inflight=100)
        self.reply_filter = reply_filter
        self.subscribed = threading.Event()
        self.connects = 0
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_message = lambda c, u, m: self.events.put(("message", (m.topic, bytes(m.payload), bool(m.retain))))
        self.c.on_disconnect = lambda *a: self.events.put(("disconnected", None))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.events.put(("refused", str(reason)))
            return
        if self.reply_filter:
            client.subscribe(self.reply_filter, qos=1)
        else:
            self.subscribed.set()
        self.connects += 1
        self.events.put(("connected", self.connects))

    def start(self, session_expiry_s: int = 600) -> None:
        connect_async(self.c, self.broker, persistent=True, session_expiry_s=session_expiry_s)
        self.c.loop_start()

    def wait_ready(self, timeout: float) -> bool:
        return self.subscribed.wait(timeout)

    def publish(self, msgs: Sequence[P.Message]) -> None:
        for topic, payload in msgs:
            self.c.publish(topic, payload, qos=1)

    def close(self) -> None:
        try:
            # End the session now rather than leaving it on the broker until it expires.
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
            self.c.disconnect(properties=props)
        finally:
            self.c.loop_stop()


def discover_gateways(broker: Any, wait_s: float = 1.5, ca_file: str | None = None) -> list[str]:
    """Gateways whose retained ``alanet/<gw>/status`` says ``online``.

    Behind a bridge (docs/fleet.md) a gateway's status stays ``online`` when the
    bridge's link drops; its retained ``alanet/<gw>/bridge`` then says ``0`` and the
    gateway is left out (and named in the log).
    """
    cl = _Client(broker, f"discover-{uuid.uuid4().hex[:8]}", "alanet/+/+", ca_file)
    cl.start(session_expiry_s=0)
    found: dict[str, bool] = {}
    bridge_down: set[str] = set()
    try:
        if not cl.wait_ready(10):
            raise InputError(f"--broker: cannot reach {cl.broker.url}")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                kind, detail = cl.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if kind == "message":
                topic, payload, _ = detail
                parts = topic.split("/")
                try:
                    online = json.loads(payload).get("state") == "online"
                except (ValueError, AttributeError):
                    online = False
                if len(parts) == 3 and parts[2] == "status":
                    found[parts[1]] = online
                elif len(parts) == 3 and parts[2] == "bridge" and payload.strip() == b"0":
                    bridge_down.add(parts[1])
    finally:
        cl.close()
    for g in sorted(g for g, on in found.items() if on and g in bridge_down):
        log.warning("--all: %s: its status says online but its bridge to this broker is down; left out", g)
    return sorted(g for g, on in found.items() if on and g not in bridge_down)


def send_to_fleet(archive: bytes | None, gateways: Sequence[str], broker: Any, *, name: str = "",
                  timeout: float = 120.0, chunk_size: int = P.DEFAULT_CHUNK, retry_s: float = 3.0,
                  progress: bool = True, ca_file: str | None = None, sign: str | Path | None = None) -> list[GatewayOutcome]:
    """Flash ``archive`` (or, with ``archive=None``, roll back) on every gateway; one outcome each.

    ``sign``: the private key that signs the rollback command (gateways with trusted keys
    obey only signed commands); bundles carry their own signature.
    """
    tid = uuid.uuid4().hex[:16]
    offer = P.make_offer(tid, archive, chunk_size, name) if archive is not None else None

    def chunk(i: int) -> bytes:
        assert archive is not None and offer is not None
        return archive[i * offer.chunk_size:(i + 1) * offer.chunk_size]

    issued = time.time()
    sends = {g: P.GatewaySend(g, offer, chunk, retry_s=retry_s,
                              command=b"" if offer else C.make_command("rollback", g, tid, sign, issued))
             for g in gateways}
    started = {g: 0.0 for g in gateways}
    finished: dict[str, float] = {}
    cl = _Client(broker, tid, f"alanet/+/flash/{tid}", ca_file)
    bars: dict[str, Any] = {}
    labelled: set[str] = set()
    if progress:
        from tqdm import tqdm

        width = max(len(g) for g in gateways)
        for i, g in enumerate(gateways):
            bars[g] = tqdm(total=offer.chunks if offer else 1, desc=g.ljust(width), unit="chunk" if offer else "step",
                           position=i, leave=True, file=sys.stderr, mininterval=0.2, dynamic_ncols=True)
    cl.start()
    deadline = time.monotonic() + timeout
    try:
        if not cl.wait_ready(min(timeout, 15.0)):
            raise InputError(f"--broker: cannot reach {cl.broker.url}")
        now = time.monotonic()
        for g, s in sends.items():
            started[g] = now
            cl.publish(s.start(now, rollback_request=tid if offer is None else None))
        first_connect = True
        while time.monotonic() < deadline and not all(s.done for s in sends.values()):
            try:
                kind, detail = cl.events.get(timeout=0.1)
            except queue.Empty:
                kind, detail = "tick", None
            now = time.monotonic()
            if kind == "connected":
                if first_connect:
                    first_connect = False
                else:
                    log.info("flash: reconnected to the broker; asking the gateways where they stand")
                    for s in sends.values():
                        cl.publish(s.on_reconnect(now))
            elif kind == "disconnected":
                log.info("flash: lost the broker; reconnecting")
            elif kind == "message":
                topic, payload, _ = detail
                parts = topic.split("/")
                g = parts[1] if len(parts) == 4 else None
                if g in sends:
                    try:
                        d = json.loads(payload)
                    except ValueError:
                        continue
                    if d.get("transfer") == tid:
                        s = sends[g]
                        cl.publish(s.on_reply(d, now))
                        if s.done and g not in finished:
                            finished[g] = now
            for s in sends.values():
                cl.publish(s.on_tick(now))
            for g, bar in bars.items():
                s = sends[g]
                n = s.received if offer else int(s.done)
                if n > bar.n:
                    bar.update(n - bar.n)
                if s.done and s.result is not None and g not in labelled:
                    labelled.add(g)
                    bar.set_postfix_str("active" if s.result.get("state") == "active" else "refused", refresh=False)
                    bar.close()
    finally:
        for bar in bars.values():
            bar.close()
        cl.close()
    out: list[GatewayOutcome] = []
    end = time.monotonic()
    for g, s in sends.items():
        secs = round(finished.get(g, end) - started[g], 3)
        n = offer.chunks if offer else 0
        if s.result is None:
            out.append(GatewayOutcome(g, NO_ANSWER, None, f"no answer in {timeout:g} s "
                                      f"({s.received}/{n} chunks confirmed, {s.replies} replies)" if offer else
                                      f"no answer in {timeout:g} s", s.received, n, s.resent, secs))
        elif s.result.get("state") == "active":
            out.append(GatewayOutcome(g, TOOK, s.result.get("model"), None, n, n, s.resent, secs))
        else:
            out.append(GatewayOutcome(g, REFUSED, s.result.get("model"), s.result.get("reason") or "refused",
                                      s.received, n, s.resent, secs))
    return out


def summary_table(outcomes: Sequence[GatewayOutcome], what: str = "bundle") -> str:
    """The fleet summary printed at the end."""
    rows = [("gateway", "result", "model now", "detail")]
    for o in outcomes:
        detail = o.reason or (f"{o.seconds:.1f} s" + (f", {o.resent} chunk(s) re-sent" if o.resent else ""))
        rows.append((o.gateway, o.status, o.model or "-", detail))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in rows]
    took = sum(o.ok for o in outcomes)
    refused = sum(o.status == REFUSED for o in outcomes)
    silent = sum(o.status == NO_ANSWER for o in outcomes)
    lines.append(f"{took} of {len(outcomes)} gateway(s) took the {what}; {refused} refused; {silent} did not answer in time")
    return "\n".join(lines)


# --------------------------------------------------------------------------- --to PATH


def install_to(path: str | Path, bundle: str | Path | None, *, trusted_keys: Sequence[str] = (),
               allow_unsigned: bool = False, sample_rate_hz: float | None = 60.0, rollback: bool = False,
               allow_downgrade: bool = False) -> str:
    """``alanet flash BUNDLE --to PATH`` / ``--rollback --to PATH``; returns a one-line report."""
    from alanet.device.flash.store import BundleStore, Fit, TrustPolicy

    store = BundleStore(path)
    policy = TrustPolicy(tuple(trusted_keys), allow_unsigned)
    fit = Fit(sample_rate_hz=sample_rate_hz)
    if rollback:
        target = store.rollback_target()
        b = store.load(target, policy, fit)
        before = store.rollback()
        return f"{path}: rolled back to {b.model_id} ({target}); {before.current} kept for rollback"
    assert bundle is not None
    b, before = store.install(bundle, policy, fit, allow_downgrade=allow_downgrade)
    prev = f"; {before.current} kept for rollback" if before.current else ""
    signed = f", signed by key {b.signed_by}" if b.signed_by else ", unsigned"
    return f"{path}: installed {b.model_id} ({store.state().current}{signed}, self-test max |Δ| " \
           f"{b.self_test_max_diff:.2g}){prev}"


# --------------------------------------------------------------------------- command


def cmd_flash(args: argparse.Namespace) -> int:
    """``alanet flash``."""
    if args.to:
        if args.broker or args.gateway or args.all:
            raise InputError("--to: give either --to PATH or --broker with --gateway/--all, not both")
        if not args.rollback and not args.bundle:
            raise InputError("BUNDLE: which bundle to install? (or --rollback)")
        if args.rollback and args.bundle:
            raise InputError("--rollback: takes no BUNDLE")
        if args.sign:
            raise InputError("--sign: only for a rollback over MQTT (a local rollback needs no command)")
        print(install_to(args.to, args.bundle, trusted_keys=args.trust or (), allow_unsigned=args.allow_unsigned,
                         sample_rate_hz=args.sample_rate, rollback=args.rollback,
                         allow_downgrade=args.allow_downgrade))
        return 0
    if args.allow_downgrade:
        raise InputError("--allow-downgrade: only with --to (over MQTT a gateway never goes below its newest bundle)")
    if not args.bundle and not args.rollback and args.gateway and len(args.gateway) > 1 and Path(args.gateway[-1]).exists():
        args.bundle = args.gateway.pop()  # "--gateway a b BUNDLE": argparse gave BUNDLE to --gateway
    if not args.broker:
        raise InputError("--broker: needed (or --to PATH for a local install)")
    if args.trust or args.allow_unsigned:
        raise InputError("--trust/--allow-unsigned: only with --to (over MQTT the gateway applies its own trust policy)")
    if bool(args.gateway) == bool(args.all):
        raise InputError("--gateway: name the gateway(s) with --gateway ID [ID ...] or use --all")
    if args.rollback and args.bundle:
        raise InputError("--rollback: takes no BUNDLE")
    if not args.rollback and not args.bundle:
        raise InputError("BUNDLE: which bundle to send? (or --rollback)")
    if not P.MIN_CHUNK <= args.chunk_size <= P.MAX_CHUNK:
        raise InputError(f"--chunk-size: must be in {P.MIN_CHUNK}..{P.MAX_CHUNK}, got {args.chunk_size}")
    if args.sign and not args.rollback:
        raise InputError("--sign: only with --rollback (a bundle is signed when it is made: alanet convert --sign)")
    if args.sign:
        from alanet.device.signing import load_private_key

        load_private_key(args.sign)
    if args.timeout <= 0:
        raise InputError(f"--timeout: must be > 0, got {args.timeout}")
    archive, name = (None, "") if args.rollback else read_archive(args.bundle, plain=args.plain_tar)
    if args.all:
        gateways = discover_gateways(args.broker, ca_file=args.ca_file)
        if not gateways:
            raise InputError(f"--all: no gateway reports online on {args.broker}")
        print(f"found {len(gateways)} gateway(s) online: {', '.join(gateways)}", file=sys.stderr)
    else:
        from alanet.device.config import ID_RE

        gateways = list(dict.fromkeys(args.gateway))
        for g in gateways:
            if not ID_RE.match(g):
                raise InputError(f"--gateway: {g!r} is not a valid gateway id")
    outcomes = send_to_fleet(archive, gateways, args.broker, name=name, timeout=args.timeout,
                             chunk_size=args.chunk_size, progress=not args.no_progress, ca_file=args.ca_file,
                             sign=args.sign)
    print(summary_table(outcomes, "rollback" if args.rollback else "bundle"))
    return 0 if all(o.ok for o in outcomes) else 1
