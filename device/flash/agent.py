"""The gateway side of ``alanet flash``: receive, verify, install and activate bundles over MQTT.

:class:`FlashAgent` has its own paho-mqtt 2.x client (QoS 1, persistent session:
MQTT 5 ``clean_start=False`` with a session expiry, or ``clean_session=False`` under
3.1.1), so commands sent while the gateway or the broker was away are delivered when
both are back. It subscribes to ``alanet/<gw>/cmd/flash/#`` and
``alanet/<gw>/cmd/rollback`` (see :mod:`~alanet.device.flash.protocol`).

Paho's network thread only queues incoming messages; one worker thread handles them
in order: chunks go to files ``chunk-NNNNNN`` in ``bundles/.staging/flash-<tid>/``
(written atomically, so re-delivered chunks are harmless and a transfer survives a
broker or gateway restart). On ``end`` with every chunk present the archive is
assembled and checked (size, SHA-256), unpacked, verified with the trust policy
(signature, hash, schema, LiteRT self-test) and against the wearable (:class:`Fit`),
moved into the :class:`~alanet.device.flash.store.BundleStore` and made current, and
``on_activate(bundle)`` is called: the runtime switches models between two windows.
If anything fails, the pointer stays (or goes back) where it was, the old model keeps
running, and the reason is reported: on the reply topic and, retained, on
``alanet/<gw>/model``.

Hostile input is bounded before any signature can be checked: offers within the
protocol's limits (chunk size, chunk count, archive size), at most
``MAX_ACTIVE_TRANSFERS`` staged transfers, nothing remembered for a transfer whose
offer was never accepted, missing chunks answered as ranges, archives (tar, plain or
xz-compressed with a bound on what they unpack to) read member by member
(:func:`~alanet.device.bundle.unpack`), and under MQTT 5 the
broker is asked never to deliver a packet larger than a chunk (``MaximumPacketSize``).
A verified bundle must also be meant for this gateway and not older than the newest
it has run (:func:`~alanet.device.flash.store.admission_problem`). Rollback obeys only
signed, fresh commands (:mod:`~alanet.device.flash.command`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import paho.mqtt.client as mqtt

from alanet.device.bundle import Bundle, BundleError, unpack
from alanet.device.config import BrokerConfig, parse_broker_url
from alanet.device.flash import command as C
from alanet.device.flash import protocol as P
from alanet.device.flash.store import BundleStore, Fit, StoreState, TrustPolicy, admission_problem, verify_bundle
from alanet.device.mqtt_link import connect_async, make_client
from alanet.errors import InputError

log = logging.getLogger("alanet.flash")

RESULTS_DIR = ".results"
KEEP_RESULTS = 50
COMMANDS_FILE = "commands.json"  # the issue time of the last signed command obeyed (replay guard)
INBOX_MAX = 256  # end / rollback messages waiting for the worker (each at most MAX_COMMAND_BYTES)
MAX_PACKET = P.MAX_CHUNK + 4096  # the largest MQTT packet the broker may deliver to the agent (MQTT 5)


def _one_line(text: str, limit: int = 500) -> str:
    """A reason fit for a table cell and a JSON field: one line, bounded."""
    t = " ".join(text.split())
    return t if len(t) <= limit else t[:limit - 1] + "…"


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def as_broker(broker: BrokerConfig | str) -> BrokerConfig:
    return parse_broker_url(broker, "--broker") if isinstance(broker, str) else broker


@dataclass(frozen=True)
class FlashResult:
    """Outcome of one flash or rollback on one gateway."""

    state: str  # "active" | "refused"
    model: str | None  # model id running now
    reason: str | None = None
    transfer: str | None = None
    offered: str | None = None  # model id of the bundle offered (when known)
    previous: str | None = None  # model id kept for rollback

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "model": self.model, "reason": self.reason, "transfer": self.transfer,
                "offered": self.offered, "previous": self.previous}


class TransferDir:
    """One transfer's staging directory: the offer, the chunk files, the assembled archive."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._have: set[int] | None = None

    @property
    def offer_path(self) -> Path:
        return self.root / "offer.json"

    def have(self) -> set[int]:
        if self._have is None:
            self._have = set()
            if self.root.is_dir():
                for p in self.root.glob("chunk-*"):
                    if p.name[6:].isdigit():
                        self._have.add(int(p.name[6:]))
        return self._have

    def save_offer(self, offer: P.Offer) -> None:
        from alanet.atomic import write_bytes

        self.root.mkdir(parents=True, exist_ok=True)
        old = self.offer()
        if old is not None and old != offer:
            raise P.ProtocolError("offer: differs from the one this transfer started with")
        if old is None:
            write_bytes(self.offer_path, offer.to_bytes())

    def offer(self) -> P.Offer | None:
        try:
            return P.Offer.from_bytes(self.offer_path.read_bytes(), self.root.name.removeprefix("flash-"))
        except (OSError, P.ProtocolError):
            return None

    def idle_s(self) -> float:
        """Seconds since anything was written to the transfer (a chunk, the offer)."""
        try:
            return time.time() - self.root.stat().st_mtime
        except OSError:
            return float("inf")

    def put(self, index: int, data: bytes) -> bool:
        """Store chunk ``index`` (atomically); False if it was already there."""
        have = self.have()
        if index in have:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".chunk-{index:06d}.{uuid.uuid4().hex[:6]}"
        tmp.write_bytes(data)
        os.replace(tmp, self.root / f"chunk-{index:06d}")
        have.add(index)
        return True

    def drop(self, index: int) -> None:
        (self.root / f"chunk-{index:06d}").unlink(missing_ok=True)
        self.have().discard(index)

    def assemble(self, offer: P.Offer) -> Path:
        """Concatenate the chunks into ``archive.tar``; ProtocolError on a size or SHA-256 mismatch."""
        out = self.root / "archive.tar"
        h = hashlib.sha256()
        size = 0
        with open(out, "wb") as f:
            for i in range(offer.chunks):
                data = (self.root / f"chunk-{i:06d}").read_bytes()
                h.update(data)
                size += len(data)
                f.write(data)
        if size != offer.size:
            raise P.ProtocolError(f"archive: {size} bytes received, the offer says {offer.size}")
        if h.hexdigest() != offer.sha256:
            raise P.ProtocolError("archive: SHA-256 mismatch (the transfer was corrupted)")
        return out


class FlashAgent:
    """Receives bundles for one gateway (see the module docstring); ``start()`` / ``stop()``.

    ``fit`` (or a function returning one) says what the wearable feeds.
    ``on_activate(bundle)`` switches the running model and returns once it runs (it
    may raise to refuse: the store pointer then goes back). ``running`` is the bundle
    in use now (kept as the rollback target when the store is still empty).
    ``model_payload()`` gives the gateway's own description of its running model,
    merged into the retained report; ``report(payload)``, when given, publishes that
    report instead of the agent's own client (the gateway's link re-sends it on reconnect).
    """

    def __init__(self, gateway_id: str, broker: BrokerConfig | str, store: BundleStore, *,
                 trusted_keys: tuple[str, ...] | list[str] = (), allow_unsigned: bool = False,
                 fit: Fit | Callable[[], Fit] | None = Fit(), on_activate: Callable[[Bundle], None] | None = None,
                 running: Bundle | None = None, model_payload: Callable[[], Mapping[str, Any]] | None = None,
                 report: Callable[[bytes], None] | None = None, client_id: str | None = None, mqtt5: bool = True,
                 session_expiry_s: int = 7 * 86400, progress_every: int = 0) -> None:
        self.gateway = gateway_id
        self.broker = as_broker(broker)
        self.store = store
        self.policy = TrustPolicy(tuple(str(k) for k in trusted_keys), bool(allow_unsigned))
        self.fit = fit
        self.on_activate = on_activate
        self.running = running
        self.model_payload = model_payload
        self.report = report
        self.mqtt5 = mqtt5
        self.session_expiry_s = int(session_expiry_s)
        self.progress_every = progress_every
        self.client = make_client(self.broker, client_id or f"alanet-{gateway_id}-flash", protocol="5" if mqtt5 else "3.1.1",
                                  persistent=True, reconnect=(0.2, 5), max_inflight=100)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self._connected = threading.Event()
        self._worker: threading.Thread | None = None
        self._inbox: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=INBOX_MAX)
        self.dropped = 0  # commands dropped because the inbox was full
        self.refused_commands = 0  # rollback commands ignored (unsigned, foreign, stale, malformed)
        self._transfers: dict[str, TransferDir] = {}  # accepted transfers only
        self._last_progress: dict[str, int] = {}
        self.last_result: FlashResult | None = None
        self.results_dir = store.root / RESULTS_DIR
        self.lock = threading.Lock()  # held while a bundle is being activated
        self._tlock = threading.Lock()  # staging directories (paho's thread and the worker)

    # ---- lifecycle ----
    def start(self) -> "FlashAgent":
        self.store.root.mkdir(parents=True, exist_ok=True)
        self.store.prune()
        self._worker = threading.Thread(target=self._work, name=f"flash-{self.gateway}", daemon=True)
        self._worker.start()
        connect_async(self.client, self.broker, persistent=True, session_expiry_s=self.session_expiry_s,
                      max_packet=MAX_PACKET)
        self.client.loop_start()
        return self

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        try:
            self._inbox.put(None, timeout=5)
        except queue.Full:
            pass
        if self._worker is not None:
            self._worker.join(10)
        self.client.disconnect()
        self.client.loop_stop()

    # ---- paho callbacks (network thread) ----
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("flash: broker %s refused the connection: %s", self.broker.url, reason)
            return
        client.subscribe([(P.flash_filter(self.gateway), 1), (P.rollback_topic(self.gateway), 1)])
        self._connected.set()
        try:
            self._inbox.put_nowait(("connected", None))
        except queue.Full:
            pass

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Offers and chunks are written here, before paho sends the PUBACK: the broker holds
        # back the rest while the disk is slow, and an acknowledged chunk is in its staging file. The rest
        # (``end`` runs the verification, rollback) goes to the worker thread, through a bounded inbox.
        cmd = P.parse_command(self.gateway, msg.topic)
        if cmd is None:
            return
        if cmd.kind != "chunk" and len(msg.payload) > P.MAX_COMMAND_BYTES:
            log.warning("flash: %s of %d bytes ignored (at most %d)", cmd.kind, len(msg.payload), P.MAX_COMMAND_BYTES)
            return
        if cmd.kind in ("chunk", "begin"):
            try:
                self.handle(msg.topic, bytes(msg.payload))
            except Exception:  # noqa: BLE001 - a bad chunk must not kill paho's thread
                log.exception("flash: storing %s failed", msg.topic)
            return
        try:
            self._inbox.put_nowait((msg.topic, bytes(msg.payload)))
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning("flash: %d command(s) dropped: more than %d waiting (a flood?)", self.dropped, INBOX_MAX)

    # ---- worker thread ----
    def _work(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            topic, payload = item
            try:
                if topic == "connected":
                    self.publish_model_report()
                else:
                    self.handle(topic, payload)
            except Exception:  # noqa: BLE001 - one bad message must not stop the agent
                log.exception("flash: handling %s failed", topic)

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain)

    def handle(self, topic: str, payload: bytes) -> None:
        """Act on one command message (paho's thread for begin/chunk, the worker for the rest)."""
        cmd = P.parse_command(self.gateway, topic)
        if cmd is None:
            return
        if cmd.kind == "rollback":
            self._rollback(payload)
            return
        tid = cmd.transfer
        assert tid is not None
        done = self._stored_result(tid)
        if done is not None:
            if cmd.kind != "chunk":
                self._publish(P.reply_topic(self.gateway, tid), P.reply(self.gateway, tid, "result", **done))
            return
        if cmd.kind == "chunk":
            self._chunk(cmd, payload)
            return
        with self._tlock:
            try:
                offer = P.Offer.from_bytes(payload, tid)
                td = self._accept(tid, offer)
            except P.ProtocolError as exc:
                result: FlashResult | None = FlashResult("refused", self._running_id(), str(exc), tid,
                                                         previous=self._previous_id())
                td = self._staged(tid)  # a staged transfer this message contradicts ends here
            else:
                result = None
        if result is not None:
            self._finish(tid, td, result, final=False)
            return
        assert td is not None
        if cmd.kind == "begin":
            log.info("flash %s: receiving %s (%d bytes in %d chunks)", tid, offer.name or "a bundle", offer.size, offer.chunks)
            self._progress(tid, td, offer, force=True)
            return
        # end: complete?
        with self._tlock:
            for i in list(td.have()):
                if i >= offer.chunks or (td.root / f"chunk-{i:06d}").stat().st_size != offer.chunk_len(i):
                    td.drop(i)
            missing = P.missing_ranges(td.have(), offer.chunks)
            if missing:
                self._publish(P.reply_topic(self.gateway, tid),
                              P.reply(self.gateway, tid, "missing", received=len(td.have()), chunks=offer.chunks,
                                      missing=missing))
                return
            try:
                archive: Path | P.ProtocolError = td.assemble(offer)
            except P.ProtocolError as exc:
                archive = exc
        self._finish(tid, td, self._install(tid, td, offer, archive))

    def _staged(self, tid: str) -> TransferDir | None:
        """The transfer ``tid`` if its offer was accepted (in memory or on disk from before a restart)."""
        td = self._transfers.get(tid)
        if td is None:
            root = self.store.staging / f"flash-{tid}"
            if not (root / "offer.json").is_file():
                return None  # nothing is remembered for a transfer whose offer was never accepted
            td = self._transfers[tid] = TransferDir(root)
        return td

    def _accept(self, tid: str, offer: P.Offer) -> TransferDir:
        """Stage the transfer ``tid`` (or find it staged); ProtocolError when the gateway is busy."""
        td = self._staged(tid)
        if td is None:
            others = [d for d in self.store.staging.glob("flash-*") if d.is_dir() and d.name != f"flash-{tid}"]
            live: list[str] = []
            staged = 0
            for d in others:
                other = self._transfers.get(d.name.removeprefix("flash-")) or TransferDir(d)
                if other.idle_s() > P.TRANSFER_IDLE_S:  # abandoned by its sender: it gives its place
                    log.warning("flash %s: abandoned after %.0f s without a chunk; removed", d.name[6:], other.idle_s())
                    shutil.rmtree(d, ignore_errors=True)
                    self._transfers.pop(d.name.removeprefix("flash-"), None)
                    self._last_progress.pop(d.name.removeprefix("flash-"), None)
                else:
                    live.append(d.name[6:])
                    o = other.offer()
                    staged += o.size if o is not None else 0
            if len(live) >= P.MAX_ACTIVE_TRANSFERS or staged + offer.size > P.MAX_STAGED_BYTES:
                raise P.ProtocolError(f"busy: {len(live)} transfer(s) in progress ({', '.join(sorted(live)[:4])}; "
                                      f"{staged >> 20} MiB staged); try again when they end")
            td = TransferDir(self.store.staging / f"flash-{tid}")
        td.save_offer(offer)
        self._transfers[tid] = td
        return td

    def _chunk(self, cmd: P.Command, payload: bytes) -> None:
        """Store one chunk (idempotent); called on paho's thread before it acknowledges."""
        tid, index = cmd.transfer, cmd.index
        assert tid is not None and index is not None
        with self._tlock:
            if self._stored_result(tid) is not None:
                return
            td = self._staged(tid)
            offer = td.offer() if td is not None else None
            if td is None or offer is None:  # begin not seen (yet): ``end`` carries the offer and gets it re-sent
                log.debug("flash %s: chunk %d before the offer; dropped", tid, index)
                return
            if index >= offer.chunks or len(payload) != offer.chunk_len(index):
                log.warning("flash %s: chunk %d of %d bytes does not fit the offer; dropped", tid, index, len(payload))
                return
            if td.put(index, payload):
                self._progress(tid, td, offer)

    def _progress(self, tid: str, td: TransferDir, offer: P.Offer, force: bool = False) -> None:
        n = len(td.have())
        every = self.progress_every or max(1, offer.chunks // 20)
        last = self._last_progress.get(tid, -1)
        if force or n == offer.chunks or n - last >= every:
            self._last_progress[tid] = n
            self._publish(P.reply_topic(self.gateway, tid),
                          P.reply(self.gateway, tid, "progress", received=n, chunks=offer.chunks))

    # ---- verification and activation ----
    def _current_fit(self) -> Fit | None:
        """What the wearable needs now (``fit`` may be a function: the wearable can change)."""
        return self.fit() if callable(self.fit) else self.fit

    def _running_id(self) -> str | None:
        return self.running.model_id if self.running is not None else None

    def floor(self) -> int:
        """The lowest bundle_version this gateway may switch to by flash: the newest it has run."""
        try:
            st = self.store.state().floor
        except InputError:
            st = 0
        return max(st, self.running.version if self.running is not None else 0)

    def _previous_id(self) -> str | None:
        try:
            prev = self.store.state().previous
        except InputError:
            return None
        if not prev:
            return None
        try:
            return str(json.loads((self.store.path(prev) / "manifest.json").read_text())["model_id"])
        except (OSError, ValueError, KeyError, InputError):
            return prev

    def _install(self, tid: str, td: TransferDir, offer: P.Offer, archive: Path | P.ProtocolError) -> FlashResult:
        offered: str | None = offer.name or None
        try:
            if isinstance(archive, P.ProtocolError):
                raise archive
            shutil.rmtree(td.root / "bundle", ignore_errors=True)  # left by an interrupted attempt
            staged = unpack(archive, td.root / "bundle")  # tar (plain or xz, bounded), member by member
            try:
                offered = str(json.loads((staged / "manifest.json").read_text())["model_id"])[:128]
            except (OSError, ValueError, KeyError, TypeError):
                pass
            bundle = verify_bundle(staged, self.policy, self._current_fit())
            problem = admission_problem(bundle, gateway=self.gateway, floor=self.floor())
            if problem is not None:
                raise BundleError(f"manifest.json: {problem}")
        except (InputError, P.ProtocolError) as exc:
            reason = _one_line(str(exc).replace(f"{td.root}/archive.tar", "archive").replace(f"{td.root}/", ""))
            log.error("flash %s: refused %s: %s", tid, offered or "bundle", reason)
            return FlashResult("refused", self._running_id(), reason, tid, offered, self._previous_id())
        except Exception as exc:  # noqa: BLE001 - disk full, permissions...: refuse, say why
            log.exception("flash %s: verification failed", tid)
            return FlashResult("refused", self._running_id(), f"gateway error: {exc}", tid, offered, self._previous_id())
        return self._activate(tid, lambda: self._commit_new(staged, bundle), offered)

    def _commit_new(self, staged: Path, bundle: Bundle) -> tuple[Bundle, StoreState]:
        if self.running is not None and self.store.state().current is None and Path(self.running.path).exists():
            try:
                self.store.adopt(self.running.path)
            except InputError as exc:
                log.warning("flash: could not keep the running bundle for rollback: %s", exc)
        name, b = self.store.commit(staged, bundle)
        assert b is not None
        return b, self.store.activate(name, floor=max(self.floor(), b.version))

    def _activate(self, tid: str | None, switch: Callable[[], tuple[Bundle, StoreState]], offered: str | None) -> FlashResult:
        """Move the store pointer (``switch``), run ``on_activate``; undo the pointer if it fails."""
        with self.lock:
            try:
                bundle, before = switch()
            except InputError as exc:
                return FlashResult("refused", self._running_id(), str(exc), tid, offered, self._previous_id())
            except Exception as exc:  # noqa: BLE001 - disk full, permissions...: refuse, say why
                log.exception("flash %s: installing failed", tid)
                return FlashResult("refused", self._running_id(), f"gateway error: {exc}", tid, offered,
                                   self._previous_id())
            try:
                if self.on_activate is not None:
                    self.on_activate(bundle)
            except Exception as exc:  # noqa: BLE001 - the runtime refused; keep the old model
                self.store.restore(before)
                reason = f"activation failed: {exc}"
                log.error("flash %s: %s", tid, reason)
                return FlashResult("refused", self._running_id(), reason, tid, bundle.model_id, self._previous_id())
            self.running = bundle
            self.store.prune()
            log.info("flash %s: model %s active", tid, bundle.model_id)
            return FlashResult("active", bundle.model_id, None, tid, bundle.model_id, self._previous_id())

    def _rollback(self, payload: bytes) -> None:
        """A rollback command: obeyed only when signed by a trusted key, for this gateway, and fresh."""
        try:
            cmd = C.read_command(payload, gateway=self.gateway, trusted_keys=self.policy.trusted_keys,
                                 allow_unsigned=self.policy.allow_unsigned)
        except P.ProtocolError as exc:
            self.refused_commands += 1
            log.error("flash: rollback ignored: %s", _one_line(str(exc), 300))
            return
        tid = cmd.request
        done = self._stored_result(tid)
        if done is not None:  # a repeated delivery: the same answer, nothing done again
            self._publish(P.reply_topic(self.gateway, tid), P.reply(self.gateway, tid, "result", **done))
            return
        stale = C.stale_problem(cmd, self._last_issued())
        if stale is not None:
            self.refused_commands += 1
            log.error("flash: rollback %s ignored: %s", tid, stale)
            self._finish(tid, None, FlashResult("refused", self._running_id(), stale, tid,
                                                previous=self._previous_id()), final=False)
            return
        if cmd.gateway is not None:
            self._save_last_issued(cmd.issued)  # before acting: a crash must not reopen it to a replay

        def switch() -> tuple[Bundle, StoreState]:
            target = self.store.rollback_target()
            bundle = verify_bundle(self.store.path(target), self.policy, self._current_fit())
            return bundle, self.store.rollback()

        log.info("flash: rollback %s (signed by %s)", tid, cmd.signed_by or "nobody: unsigned, allowed here")
        result = self._activate(tid, switch, None)
        self._finish(tid, None, result)

    def _last_issued(self) -> float:
        try:
            v = json.loads((self.store.root / COMMANDS_FILE).read_text()).get("last_issued", 0.0)
            return float(v) if isinstance(v, (int, float)) else 0.0
        except (OSError, ValueError, AttributeError):
            return 0.0

    def _save_last_issued(self, issued: float) -> None:
        from alanet.atomic import write_text

        write_text(self.store.root / COMMANDS_FILE, json.dumps({"last_issued": issued}))

    def _finish(self, tid: str, td: TransferDir | None, result: FlashResult, final: bool = True) -> None:
        """Answer; for a real flash or rollback attempt (``final``) also remember the result and report it.

        ``final=False``: a message refused before it was an attempt (a malformed or
        unwelcome offer, a stale or foreign command) is answered on the reply topic only:
        nothing is written to disk, so a flood of them costs no disk writes, and the
        retained model report keeps telling about the last real attempt. Either way the
        transfer's staging (``td``) is removed.
        """
        from alanet.atomic import write_text

        d = result.to_dict()
        if final:
            self.last_result = result
            with self._tlock:
                write_text(self.results_dir / f"{tid}.json", json.dumps(d))
            self._prune_results()
        if td is not None:
            with self._tlock:
                shutil.rmtree(td.root, ignore_errors=True)
                self._transfers.pop(tid, None)
                self._last_progress.pop(tid, None)
        self._publish(P.reply_topic(self.gateway, tid), P.reply(self.gateway, tid, "result", **d))
        if final:
            self.publish_model_report()

    def _stored_result(self, tid: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.results_dir / f"{tid}.json").read_text())
        except (OSError, ValueError):
            return None

    def _prune_results(self) -> None:
        try:
            files = sorted(self.results_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for p in files[:-KEEP_RESULTS]:
            p.unlink(missing_ok=True)

    def model_report(self) -> dict[str, Any]:
        """The retained ``alanet/<gw>/model`` payload: the running model plus the last flash outcome."""
        d: dict[str, Any] = {}
        if self.model_payload is not None:
            d.update(self.model_payload())
        elif self.running is not None:
            m = self.running.manifest
            d.update({"model": self.running.model_id, "task": self.running.task, "labels": self.running.labels,
                      "window": self.running.window, "stride": self.running.stride,
                      "sample_rate_hz": float(self.running.schema.sample_rate_hz), "sha256": m.get("model_sha256"),
                      "signed_by": self.running.signed_by, "quantization": m.get("quantization")})
        r = self.last_result
        d.update({"schema": P.MODEL_SCHEMA, "gateway": self.gateway, "model": self._running_id() or d.get("model"),
                  "state": r.state if r is not None else "active",
                  "reason": r.reason if r is not None else None,
                  "transfer": r.transfer if r is not None else None,
                  "offered": r.offered if r is not None else None,
                  "previous": self._previous_id(), "time": utc_now()})
        return d

    def publish_model_report(self) -> None:
        """Publish the report retained (or hand it to ``report``, e.g. the gateway's own link)."""
        payload = P.dumps(self.model_report())
        if self.report is not None:
            self.report(payload)
        else:
            self._publish(P.model_topic(self.gateway), payload, retain=True)
