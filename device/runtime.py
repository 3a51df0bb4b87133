"""``alanet run``: the gateway process.

Serial ports (one per wearable, reconnecting) → frame decoder → per-wearer
:class:`~alanet.device.pipeline.WearerPipeline` → alerts through the durable queue and
MQTT (:class:`~alanet.device.mqtt_link.MqttLink`), live state, a retained status
heartbeat and the retained model description.

All processing happens on one thread (the caller's): serial reader threads only hand
byte chunks over a bounded queue (when it is full, reads are dropped and counted; the
decoder resynchronises), paho's thread only hands acknowledgements over.

Reads coalesce under load and never wait when idle: before each wearer's turn the main
loop takes every chunk the reader threads have queued (up to ``DATA_QUEUE_MAX`` held),
then serves the wearer that has waited longest with all of its chunks joined into one
read (one decode, one pipeline call). An idle gateway processes a chunk as soon as it
arrives; a busy one processes everything a port delivered since that wearer's last turn
at once, so the per-read costs are shared by the frames that queued meanwhile. SIGTERM and
SIGINT stop the loop; the retained status then says ``offline`` and the alert queue
keeps whatever the broker has not acknowledged.

Each wearer is isolated: its decoder and pipeline never raise, and a fault while
publishing one wearer's window is caught, logged, counted and reported on that
wearer's state topic (``"fault"``), so one wearer's bad stream never stops the others.

Batched inference (more than one wearable and a batch limit above 1, see
:meth:`Gateway.batch_limit`): the pipelines run deferred, so a completed window is
normalised and queued as due instead of classified. The main loop keeps processing
serial reads until the data queue is empty, the batch is full, or ``batch_wait_ms``
has passed since the oldest due window; then one :func:`~alanet.device.pipeline.predict_windows`
call classifies every due window (:meth:`Gateway.classify_due`), each wearer's
windows are concluded in order by the unchanged decision code, and the iteration's
alerts are committed together. A due window is never held back while nothing is
waiting to be read, so an idle gateway answers at once. If the batched call raises,
the windows are classified one at a time and only a window that still fails is
charged (to its own wearer). Nothing is due when the loop switches models or serves
MQTT commands. With one wearable the pipeline classifies each window at once (batch 1).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fcntl
import gc
import json
import logging
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from alanet.device.alert_queue import AlertQueue
from alanet.device.config import GatewayConfig, WearableConfig, load_config
from alanet.device.decisions import Event
from alanet.device.mqtt_link import MqttLink
from alanet.device.pipeline import ModelSpec, WearerPipeline, WindowResult, predict_each, predict_windows
from alanet.device.reads import HeldReads
from alanet.errors import InputError
from alanet.firmware_bridge.protocol import Exercise

# Default windows per classify_due call when the bundle's native batch is smaller: deferring
# windows pays even for a batch-1 model (alert commits and publishes are shared), measured 625
# vs 387-500 wearables per core (docs/performance.md).
DEFER_MIN = 16

log = logging.getLogger("alanet.gateway")

ALERT_SCHEMA = "alanet.alert/1"
STATE_SCHEMA = "alanet.state/1"
STATUS_SCHEMA = "alanet.status/1"
MODEL_SCHEMA = "alanet.model/1"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def held_limit(cfg: GatewayConfig) -> int:
    """Chunks the main loop may hold in all: twice ``read_hold_ms`` of 60 Hz frames in two reads
    each per wearable, and some slack (past it, the oldest held reads are processed at once)."""
    per_wearer = int(2 * cfg.read_hold_ms / 1000.0 * 60 * 2) + 16
    return max(DATA_QUEUE_MAX, per_wearer * len(cfg.wearables))


def settle_heap() -> None:
    """Put what starting up allocated (model, pipelines, buffers, imports) out of the cyclic garbage
    collector's reach: its full collections then scan only what the main loop allocates, and their
    pauses (tens of ms with hundreds of wearables) stay out of the alert latency."""
    gc.collect()
    gc.freeze()


def topic(gateway: str, *parts: str) -> str:
    return "/".join(("alanet", gateway, *parts))


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # one encoder: json.dumps builds one per call


def _dumps(obj: Any) -> bytes:
    return _ENCODER.encode(obj).encode()


def alert_payload(gateway: str, wearer: str, ev: Event, model_id: str, seq: int | None = None,
                  alert_id: str | None = None) -> dict[str, Any]:
    """The alert JSON (see ``schemas/alert.schema.json``)."""
    d: dict[str, Any] = {
        "schema": ALERT_SCHEMA, "id": alert_id or str(uuid.uuid4()), "gateway": gateway, "wearer": wearer,
        "type": ev.type, "state": ev.state, "probability": round(min(max(ev.probability, 0.0), 1.0), 4),
        "t_start": round(ev.t_start, 3), "t_end": round(ev.t_end, 3), "window": ev.window,
        "model": model_id, "time": utc_now(),
    }
    if ev.level is not None:
        d["level"] = ev.level
    if seq is not None:
        d["seq"] = seq
    return d


DATA_QUEUE_MAX = 4096  # serial reads waiting for the main loop (each at most 64 KiB)
WAKE_QUEUED = DATA_QUEUE_MAX // 4  # serial reads queued that wake the main loop whatever they hold
FRAME_END = b"\x00"  # the wire's frame delimiter (COBS)
PARTIAL_MAX = 4096  # bytes of an unfinished frame a reader thread keeps before handing them over anyway
LOOP_BUDGET_S = 0.05  # longest the main loop processes serial data before it serves MQTT
# longest the main loop waits for a read that may complete a window, for MQTT (paho's thread wakes it)
# or for held data to come due; then it takes in what the reader threads queued and polls MQTT
IDLE_S = 0.25
FAULT_REPORT_S = 5.0  # at most one fault report per wearer this often (every fault is counted)


@dataclass
class Wearable:
    """One wearer's slot in the gateway: its config, decoder, pipeline, serial link and fault record."""

    cfg: WearableConfig
    pipeline: WearerPipeline
    decoder: Any
    link: Any = None  # SerialLink
    serial_state: str = "starting"
    reconnects: int = 0  # of links already closed
    faults: int = 0  # faults of the runtime's own work for this wearer (publishing its windows)
    last_fault: str | None = None
    last_t_end: float = 0.0  # stream time of the last window
    reported_faults: int = 0  # faults (pipeline + runtime) already reported on the state topic
    next_report: float = 0.0  # monotonic time before which no new fault report goes out

    def fault_count(self) -> int:
        return self.faults + self.pipeline.counters.faults


def load_model(cfg: GatewayConfig) -> tuple[Any, ModelSpec]:
    """Load and verify the bundle (hash, signature, schema, self-test); build the model spec.

    A bundle flashed into ``<state_dir>/bundles`` (``alanet flash``) wins over ``cfg.bundle``.
    """
    from alanet.device.flash.store import BundleStore

    if BundleStore(cfg.state_dir).state().current:
        from alanet.device.flash.gateway import startup_model

        return startup_model(cfg)
    from alanet.device.bundle import load_bundle
    from alanet.device.inference import ModelRunner

    bundle = load_bundle(cfg.bundle, trusted_keys=list(cfg.trusted_keys) or None, allow_unsigned=cfg.allow_unsigned,
                         run_self_test=True)
    from alanet.device.schema import EMOPAIN

    if bundle.schema.names != EMOPAIN.names:
        raise InputError(f"{cfg.bundle}: manifest.json: channels: the model wants {bundle.schema.n_channels} channels "
                         f"({', '.join(bundle.schema.names[:3])}, ...); this gateway feeds the 30 EmoPain channels")
    runner = ModelRunner.from_bundle(bundle)
    return bundle, ModelSpec.from_bundle(bundle, runner)


class StateDirLock:
    """One gateway process per state directory (its alert queue is not shareable)."""

    def __init__(self, state_dir: str) -> None:
        d = Path(state_dir)
        try:
            d.mkdir(parents=True, exist_ok=True)
            self._f = open(d / "gateway.lock", "a+")
        except OSError as exc:
            raise InputError(f"state_dir: {d}: {exc.strerror}") from None
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"state_dir: {d} is in use by another running gateway") from None

    def release(self) -> None:
        self._f.close()


class Gateway:
    """The running gateway (see the module docstring). ``run()`` blocks until stopped."""

    def __init__(self, cfg: GatewayConfig, *, model: tuple[Any, ModelSpec] | None = None,
                 on_result: Callable[[WindowResult], None] | None = None) -> None:
        self.cfg = cfg
        self._lock = StateDirLock(cfg.state_dir)
        try:
            t0 = time.perf_counter()
            self.bundle, self.spec = model or load_model(cfg)
            self.model_load_s = time.perf_counter() - t0
            try:
                self.queue = AlertQueue(cfg.queue_path)
            except OSError as exc:
                raise InputError(f"state_dir: {exc}") from None
        except BaseException:
            self._lock.release()
            raise
        self.on_result = on_result
        self.flash: Any = None  # alanet.device.flash.gateway.GatewayFlash while running
        self.stop_event = threading.Event()
        # serial reads for the main loop, in arrival order: (wearer, bytes, arrival). Appending wakes nobody:
        # a reader thread wakes the loop (_wake) only when its wearer's bytes not yet taken may complete
        # a window (HeldReads' need); the rest wait for the loop's own timer (their hold, or IDLE_S).
        # The bound (DATA_QUEUE_MAX) is kept by on_serial_data.
        self._data: deque[tuple[int, bytes, float]] = deque()
        self._wake = threading.Event()
        n = len(cfg.wearables)
        self._handed = [0] * n  # per wearer: bytes handed to the loop (written by its reader thread only)
        self._taken = [0] * n  # per wearer: bytes the loop took in reads (written by the main loop only)
        self._partial = [b""] * n  # per wearer: its reader thread's bytes since the last delimiter
        self.dropped_reads = 0  # serial reads dropped because the main loop fell behind
        self.started = time.monotonic()
        self.alerts = 0
        gw = cfg.gateway
        self.status_topic = topic(gw, "status")
        self._status_now = threading.Event()  # publish the status at the next loop turn (a new problem)
        self.link = MqttLink(cfg.broker, client_id=f"alanet-{gw}", alert_queue=self.queue,
                             will_topic=self.status_topic, will_payload=self._offline_payload(clean=False),
                             on_problem=self._status_now.set, retry_max_s=cfg.retry_max_s,
                             ack_timeout_s=cfg.ack_timeout_s,
                             state_hold_s=cfg.state_hold_ms / 1000.0 if len(cfg.wearables) > 1 else 0.0,
                             on_activity=self._wake.set)
        from alanet.firmware_bridge.codec import Decoder

        self.wearables = [Wearable(w, WearerPipeline(w.wearer, self.spec, cfg.max_gap_frames), Decoder())
                          for w in cfg.wearables]
        # chunks taken from the queue, per wearer, until they complete a window or wait read_hold_ms
        self.reads = HeldReads(len(self.wearables), cfg.read_hold_ms / 1000.0, held_limit(cfg))
        self._due: list[int] = []  # wearers with due windows, in the order their first one became due
        self._due_n = 0  # due windows in all
        self._due_since = 0.0  # monotonic time the oldest due window became due
        self._states: list[tuple[str, bytes]] | None = None  # while classify_due runs: state messages to send
        self.batches = 0  # batched model calls (classify_due)
        self.batch_windows = 0  # windows they classified
        self.batch_s = 0.0  # time inside those calls
        self.batch_failures = 0  # batched calls that raised (their windows were then classified one by one)
        self._set_batching()
        self._state_topics = [topic(gw, w.cfg.wearer, "state") for w in self.wearables]
        self._alert_topics = [topic(gw, w.cfg.wearer, "alert") for w in self.wearables]
        self.sessions: Any = None  # GatewaySessions: exercise context and session logs ([sessions] enabled)
        if cfg.sessions.enabled:
            from alanet.device.gateway_sessions import GatewaySessions

            try:
                self.sessions = GatewaySessions(self)
            except OSError as exc:
                self.queue.close()
                self._lock.release()
                raise InputError(f"sessions.dir: {cfg.sessions_dir}: {exc.strerror or exc}") from None

    # ---- payloads ----
    def _offline_payload(self, clean: bool) -> bytes:
        d: dict[str, Any] = {"schema": STATUS_SCHEMA, "gateway": self.cfg.gateway, "state": "offline"}
        if clean:
            d["time"] = utc_now()
            d["counters"] = self.counters()
        return _dumps(d)

    def counters(self) -> dict[str, Any]:
        c: dict[str, Any] = dict(frames=0, crc_errors=0, gaps=0, lost=0, bridged=0, resets=0, windows=0,
                                 resyncs=0, serial_reconnects=0, rejected=0, skipped_windows=0, faults=0)
        inf = 0.0
        for w in self.wearables:
            p, s = w.pipeline.counters, w.decoder.stats
            c["frames"] += p.frames
            c["gaps"] += p.gaps
            c["lost"] += p.lost
            c["bridged"] += p.bridged
            c["resets"] += p.resets
            c["windows"] += p.windows
            c["crc_errors"] += s.crc_errors
            c["resyncs"] += s.resyncs
            c["serial_reconnects"] += w.reconnects + int(getattr(w.link, "reconnects", 0) or 0)
            c["rejected"] += p.refused + p.no_hello + p.bad_shape + p.out_of_range + p.raw_rejected
            c["skipped_windows"] += p.skipped
            c["faults"] += w.fault_count()
            inf += p.inference_s
        c["alerts"] = self.alerts
        c["inference_ms"] = round(1000.0 * inf / c["windows"], 4) if c["windows"] else 0.0
        c["queue_depth"] = len(self.queue)
        c["dropped_reads"] = self.dropped_reads
        c.update(self.link.counters())
        c["queue_trimmed"] = self.queue.trimmed
        return c

    def problems(self) -> list[dict[str, Any]]:
        """What an operator must know about (also in the retained status): corrupt queue, refused publishes."""
        out: list[dict[str, Any]] = []
        if self.queue.recovered is not None:
            out.append({"what": "alert_queue_corrupt", "detail": self.queue.recovered})
        if self.queue.trimmed:
            out.append({"what": "alert_queue_trimmed", "detail": f"{self.queue.trimmed} oldest alert(s) dropped past "
                                                                 f"{self.queue.max_items} queued"})
        p = self.link.publish_problem()
        if p is not None:
            out.append({"what": "publish_refused", "detail": p})
        return out

    def wearer_status(self, w: Wearable) -> dict[str, Any]:
        p = w.pipeline.counters
        h = w.pipeline.hello
        return {"port": w.cfg.port, "serial": w.serial_state, "frames": p.frames, "windows": p.windows,
                "device": h.device_id if h else None, "refused": w.pipeline.refusal,
                "rejected": {"no_hello": p.no_hello, "refused": p.refused, "bad_shape": p.bad_shape,
                             "out_of_range": p.out_of_range, "raw": p.raw_rejected},
                "skipped_windows": p.skipped, "faults": w.fault_count(),
                "last_fault": w.last_fault or w.pipeline.last_fault}

    def status_payload(self) -> bytes:
        wearers = {w.cfg.wearer: self.wearer_status(w) for w in self.wearables}
        return _dumps({"schema": STATUS_SCHEMA, "gateway": self.cfg.gateway, "state": "online", "time": utc_now(),
                       "uptime_s": round(time.monotonic() - self.started, 1), "model": self.spec.model_id,
                       "counters": self.counters(), "problems": self.problems(), "wearers": wearers})

    def model_payload(self) -> bytes:
        m = getattr(self.bundle, "manifest", {}) or {}
        s = self.spec
        return _dumps({"schema": MODEL_SCHEMA, "gateway": self.cfg.gateway, "model": s.model_id, "task": s.task,
                       "labels": list(s.labels), "window": s.length, "stride": s.stride,
                       "sample_rate_hz": s.sample_rate_hz, "decision": s.decision,
                       "sha256": m.get("model_sha256"), "signed_by": getattr(self.bundle, "signed_by", None),
                       "quantization": m.get("quantization"), "bundle": str(self.cfg.bundle)})

    def _announce_homeassistant(self) -> None:
        """Home Assistant MQTT discovery: announce this run's wearers, remove earlier ones.

        Runs at every start, so switching discovery off (or removing a wearer) retracts
        what an earlier run announced.
        """
        from alanet.device import homeassistant as ha

        cfg, spec = self.cfg, self.spec
        path = Path(cfg.state_dir) / "homeassistant.json"
        msgs, announced = ha.sync_messages(
            cfg.gateway, [w.cfg.wearer for w in self.wearables], ha.load_announced(path),
            enabled=cfg.homeassistant_discovery, model_id=spec.model_id, task=spec.task,
            pain_labels=list(spec.labels) if spec.task == "pain" else None, prefix=cfg.homeassistant_prefix)
        for m in msgs:
            self.link.set_retained(m.topic, m.encode())
        try:
            ha.save_announced(path, announced)
        except OSError as exc:  # e.g. a full disk: discovery still works, removal memory does not
            log.warning("homeassistant: cannot save %s: %s", path, exc)

    # ---- serial ----
    def _open_serial(self) -> None:
        from alanet.firmware_bridge.port import SerialLink

        for i, w in enumerate(self.wearables):
            def on_data(b: bytes, i: int = i) -> None:
                self.on_serial_data(i, b)

            def on_state(state: str, w: Wearable = w) -> None:
                if state != w.serial_state:
                    (log.info if state == "up" else log.warning)("%s: serial %s: %s", w.cfg.wearer, w.cfg.port, state)
                w.serial_state = state

            w.link = SerialLink(w.cfg.port, w.cfg.baud, on_data=on_data, on_state=on_state)
            w.link.start()

    def on_serial_data(self, i: int, data: bytes) -> None:
        """Hand one serial read of wearable ``i`` to the main loop (serial reader threads).

        A read without a frame delimiter waits here, in its reader thread, for the read that
        ends its frame (up to ``PARTIAL_MAX`` bytes): nothing in it can be decoded before (an
        idle line gives a frame as two reads, its first byte and the rest). The decoder sees
        the same bytes in the same order. A hand-off wakes the main loop only when the
        wearer's bytes not yet taken may complete its next window (or nothing is held, or the
        queue grows long); the rest waits for the loop's own timer.

        Never blocks: when the main loop has fallen ``DATA_QUEUE_MAX`` reads behind, the
        read is dropped and counted (the decoder resynchronises at the next delimiter).
        """
        part = self._partial[i]
        if FRAME_END not in data and len(part) + len(data) < PARTIAL_MAX:
            self._partial[i] = part + data
            return
        if part:
            data, self._partial[i] = part + data, b""
        if len(self._data) < DATA_QUEUE_MAX:  # reader threads race here: the bound holds within their number
            self._data.append((i, data, time.monotonic()))
            self._handed[i] += len(data)  # only this wearer's reader thread writes it
            reads = self.reads
            if self._untaken(i) >= reads.need(i) or not reads.hold_s or len(self._data) >= WAKE_QUEUED:
                self._wake.set()
        else:
            self.dropped_reads += 1
            if self.dropped_reads in (1, 10, 100, 1000) or self.dropped_reads % 10000 == 0:
                log.error("the main loop is %d serial reads behind: %d read(s) dropped so far", DATA_QUEUE_MAX,
                          self.dropped_reads)

    def _untaken(self, i: int) -> int:
        """Bytes of wearer ``i`` handed to the main loop and not yet taken in a read."""
        return self._handed[i] - self._taken[i]

    def _next_read(self, *, drain: bool = False) -> tuple[int, bytes] | None:
        """Take the queued chunks in (while fewer than the limit are held); then the next read that is
        due (see :class:`HeldReads`), its chunks joined, or None. ``drain``: any held read."""
        data, reads = self._data, self.reads
        if not reads.full:  # what the reader threads queued so far (more comes at the next call)
            pop, add = data.popleft, reads.add
            for _ in range(len(data)):
                add(*pop())
                if reads.full:
                    break
        item = reads.take(time.monotonic(), drain=drain or reads.full)  # full: the oldest goes, due or not
        if item is None:
            return None
        i, chunks, _ = item
        joined = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._taken[i] += len(joined)
        return i, joined

    # ---- batching ----
    def batch_limit(self) -> int:
        """Windows per model call: ``[runtime] batch_max``, or (0) the model's largest native batch
        size but at least :data:`DEFER_MIN` (a batch-1 model then runs the due windows as single
        invokes, and their alerts still share one queue commit)."""
        return int(self.cfg.batch_max or max(DEFER_MIN, *self.spec.batch_sizes))

    def _set_batching(self) -> None:
        """Deferred pipelines when batching pays (several wearables, a limit above 1); call with nothing due."""
        self._batch_spec = self.spec
        self._batch_full = self.batch_limit()
        self.reads.clear_needs()  # another model may want other windows, strides or rates
        self._wake.set()  # what is queued may meet the cleared needs: take it in at the next turn
        self.batching = len(self.wearables) > 1 and self._batch_full > 1
        for w in self.wearables:
            w.pipeline.deferred = self.batching

    @property
    def due(self) -> int:
        """Windows completed but not yet classified (batched mode)."""
        return self._due_n

    def classify_due(self) -> int:
        """Classify every due window in one model call per model (normally one), conclude each wearer's
        windows in order, publish them, and commit the alerts together. Returns the number of windows.

        Never raises: a failing batched call falls back to one call per window, and a window
        that still fails is charged to its own wearer (fault, window restart).
        """
        order, self._due, n = self._due, [], self._due_n
        self._due_n = 0
        if not n:
            return 0
        groups: dict[int, tuple[ModelSpec, list[int]]] = {}  # wearers still on another model form their own call
        for i in order:
            p = self.wearables[i].pipeline
            if p.due:
                groups.setdefault(id(p.spec), (p.spec, []))[1].append(i)
        alerts: list[tuple[int, str, str, bytes]] = []
        self._states = states = []  # the windows' state messages, sent together after the alerts' commit
        try:
            for spec, idx in groups.values():
                try:
                    self._classify_group(spec, idx, alerts)
                except Exception as exc:  # noqa: BLE001 - never expected; still, the gateway goes on
                    for i in idx:
                        self._runtime_fault(self.wearables[i], "classifying its due windows", exc)
                        self._publish(i, self.wearables[i].pipeline.conclude_due(np.zeros((0, 0), np.float32)),
                                      alerts)
        finally:
            self._states = None
        self._send_alerts(alerts)
        if states:
            # in a row (paho's network thread still wakes per message; a burst costs it ~15 % less)
            try:
                self.link.publish_many(states)
            except Exception:  # noqa: BLE001 - live state is best effort (QoS 0); alerts are already queued
                log.exception("cannot publish %d window state(s)", len(states))
        for i in order:
            w = self.wearables[i]
            if w.fault_count() != w.reported_faults:
                self._report_faults(i)
        return n

    def _classify_group(self, spec: ModelSpec, idx: list[int], alerts: list[tuple[int, str, str, bytes]]) -> None:
        pipes = [self.wearables[i].pipeline for i in idx]
        windows = [p.due_windows() for p in pipes]
        batch = np.stack([x for ws in windows for x in ws])
        failed: dict[int, str] = {}
        t0 = time.perf_counter()
        try:
            probs, att = predict_windows(spec, batch)
            if probs.shape[0] != len(batch):
                raise ValueError(f"{probs.shape[0]} predictions for {len(batch)} windows")
        except Exception as exc:  # noqa: BLE001 - one window at a time: only a bad window is charged
            self.batch_failures += 1
            if self.batch_failures in (1, 10, 100) or self.batch_failures % 1000 == 0:
                log.error("batched model call of %d windows failed (%s: %s); classifying them one by one "
                          "(%d such failures)", len(batch), type(exc).__name__, exc, self.batch_failures)
            probs, att, failed = predict_each(spec, batch)
        dt = time.perf_counter() - t0
        self.batches += 1
        self.batch_windows += len(batch)
        self.batch_s += dt
        ms = 1000.0 * dt / len(batch)  # each window is charged its share of the call
        a = 0
        for i, p, ws in zip(idx, pipes, windows):
            b = a + len(ws)
            mine = {k - a: why for k, why in failed.items() if a <= k < b}
            self._publish(i, p.conclude_due(probs[a:b], (att[0][a:b], att[1][a:b]) if att is not None else None,
                                            ms, mine), alerts)
            a = b

    def _send_alerts(self, alerts: list[tuple[int, str, str, bytes]]) -> None:
        """Commit and send the alerts of one batch together (one queue commit)."""
        if not alerts:
            return
        try:
            self.link.publish_alerts([(aid, t, payload) for _, aid, t, payload in alerts])
        except Exception as exc:  # noqa: BLE001 - charged to the wearers whose alerts these were
            for i in sorted({i for i, *_ in alerts}):
                self._runtime_fault(self.wearables[i], f"publishing {len(alerts)} alerts", exc)

    # ---- main loop ----
    def process(self, i: int, data: bytes, *, defer: bool = False) -> None:
        """Decode one chunk from wearable ``i`` and act on the windows it completes. Never raises.

        The decoder and the pipeline never raise; a fault while publishing a window is
        caught here and counted against this wearer only. In batched mode the windows
        the chunk completes become due; ``defer=True`` leaves them due for the next
        :meth:`classify_due` (the main loop's way), otherwise they are classified before
        this returns.
        """
        w = self.wearables[i]
        p = w.pipeline
        try:
            packets = w.decoder.feed_blocks(data)
        except Exception as exc:  # noqa: BLE001 - the decoder never raises; if it did, this wearer alone pays
            self._runtime_fault(w, "decoding a serial read", exc)
            packets = []
        if packets:
            try:  # the session hooks split the packets at EXERCISE packets (and log raw frames)
                s = self.sessions
                if s is None or s.plain(i, packets):
                    runs, split = (packets,), False
                else:
                    runs = s.runs(i, packets)
                    # windows before an exercise change are concluded before it (their payloads name the exercise)
                    split = p.deferred and any(type(x) is Exercise for x in packets)
                for run in runs:
                    before = p.due
                    out = p.handle(run)
                    if out:
                        self._publish(i, out)
                    after = p.due
                    if after > before:
                        if before == 0:
                            if not self._due_n:
                                self._due_since = time.monotonic()
                            self._due.append(i)
                        self._due_n += after - before
                        if split:
                            self.classify_due()
            except Exception as exc:  # noqa: BLE001 - the same for the session hooks
                self._runtime_fault(w, "running the session hooks", exc)
        ahead = p.frames_to_window()
        need = None if ahead is None else w.decoder.wire_bytes(ahead)
        self.reads.set_need(i, need)
        if need is not None and self._untaken(i) >= need:  # queued meanwhile, before the need was known
            self._wake.set()
        if self._due_n and not defer:
            self.classify_due()
        if w.fault_count() != w.reported_faults:
            self._report_faults(i)

    def _publish(self, i: int, results: list[WindowResult],
                 alerts: list[tuple[int, str, str, bytes]] | None = None) -> None:
        w = self.wearables[i]
        for r in results:
            w.last_t_end = r.t_end
            try:
                self._on_window(i, r, alerts)
            except Exception as exc:  # noqa: BLE001 - one wearer's fault must not stop the gateway
                self._runtime_fault(w, f"publishing window {r.window}", exc)

    @staticmethod
    def _runtime_fault(w: Wearable, doing: str, exc: Exception) -> None:
        """Count and note a fault of the runtime's own work for wearer ``w`` (logged 1, 10, 100, every 1000)."""
        w.faults += 1
        w.last_fault = f"{doing}: {type(exc).__name__}: {exc}"[:300]
        if w.faults in (1, 10, 100) or w.faults % 1000 == 0:
            log.exception("%s: fault %d while %s", w.cfg.wearer, w.faults, doing)

    def _report_faults(self, i: int) -> None:
        """Log and publish a wearer's new faults on its state topic (at most every ``FAULT_REPORT_S``)."""
        w = self.wearables[i]
        noted = w.pipeline.take_faults()
        now = time.monotonic()
        if now < w.next_report:
            return
        w.next_report = now + FAULT_REPORT_S
        n = w.fault_count()
        new = n - w.reported_faults
        w.reported_faults = n
        what = (noted[-1] if noted else None) or w.last_fault or w.pipeline.last_fault or "fault"
        log.error("%s: %d new fault(s), %d in all; latest: %s", w.cfg.wearer, new, n, what)
        # no classification: every probability 0 (consumers that do not know "fault" see nothing raised)
        st = {"schema": STATE_SCHEMA, "gateway": self.cfg.gateway, "wearer": w.cfg.wearer, "task": self.spec.task,
              "t_end": round(w.last_t_end, 3), "probabilities": {label: 0.0 for label in self.spec.labels},
              "smoothed": 0.0, "state": None, "model": self.spec.model_id, "fault": what, "faults": n}
        try:
            self.link.publish(self._state_topics[i], _dumps(st))
        except Exception:  # noqa: BLE001 - the report is best effort; the fault is counted and logged
            log.exception("%s: cannot publish the fault report", w.cfg.wearer)

    def _on_window(self, i: int, r: WindowResult, alerts: list[tuple[int, str, str, bytes]] | None = None) -> None:
        """Publish one window (state, and its alert: at once, or into ``alerts`` to be committed with others)."""
        gw = self.cfg.gateway
        extra = self.sessions.on_window(i, r) if self.sessions is not None else {}
        if r.attention is not None:
            extra = {**extra, "attention": r.attention.to_payload()}
        if r.event is not None:
            a = alert_payload(gw, r.wearer, r.event, self.spec.model_id, r.seq)
            a.update(extra)
            if self.sessions is not None:
                self.sessions.on_alert(i, a)
            self.alerts += 1
            log.info("ALERT %s %s %s p=%.2f t=%.1f-%.1f s", r.wearer, r.event.type, r.event.state, r.event.probability,
                     r.event.t_start, r.event.t_end)
            if alerts is None:
                self.link.publish_alert(a["id"], self._alert_topics[i], _dumps(a))
            else:
                alerts.append((i, a["id"], self._alert_topics[i], _dumps(a)))
        if self.cfg.publish_state:
            labels = self.spec.labels
            st = {"schema": STATE_SCHEMA, "gateway": gw, "wearer": r.wearer, "task": self.spec.task,
                  "t_end": round(r.t_end, 3), "seq": r.seq, "window": r.window,
                  "probabilities": {labels[k] if k < len(labels) else str(k): round(float(p), 4) for k, p in enumerate(r.probs)},
                  "smoothed": round(min(max(r.smoothed, 0.0), 1.0), 4), "state": r.state,
                  "inference_ms": round(r.inference_ms, 3), "model": self.spec.model_id, **extra}
            if self._states is not None:
                self._states.append((self._state_topics[i], _dumps(st)))
            else:
                self.link.publish(self._state_topics[i], _dumps(st))
        if self.on_result is not None:
            self.on_result(r)

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()

    def run(self, install_signals: bool = True) -> int:
        """Connect, read, decide, publish until :meth:`stop` (or SIGTERM/SIGINT)."""
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        cfg = self.cfg
        pending = len(self.queue)
        log.info("gateway %s: model %s (%s, window %d, stride %d) loaded in %.2f s; broker %s (MQTT %s); "
                 "%d alert(s) queued", cfg.gateway, self.spec.model_id, self.spec.task, self.spec.length,
                 self.spec.stride, self.model_load_s, cfg.broker.url, cfg.broker.protocol or "5, else 3.1.1", pending)
        try:
            self.link.start()
            first = self.link.wait_first_outcome(5.0)
            if first and first.startswith("refused") and any(w in first.lower() for w in ("password", "authori")):
                raise InputError(f"{cfg.source}: mqtt.username: the broker {cfg.broker.url} refused the credentials "
                                 f"({first.partition(': ')[2]})")
            self.link.set_retained(topic(cfg.gateway, "model"), self.model_payload())
            if cfg.flash_enabled:  # alanet flash: bundles over MQTT, switched between two frames
                from alanet.device.flash.gateway import GatewayFlash

                self.flash = GatewayFlash(self).start()
            self._announce_homeassistant()
            if self.sessions is not None:
                self.sessions.start()
            self._open_serial()
            # announce "online" once the ports are open (a missing port keeps being retried)
            deadline = time.monotonic() + 2.0
            for w in self.wearables:
                w.link.wait_up(max(0.0, deadline - time.monotonic()))
            self.link.set_retained(self.status_topic, self.status_payload())
            next_beat = time.monotonic() + cfg.heartbeat_s
            batch_wait_s = cfg.batch_wait_ms / 1000.0
            reads = self.reads
            wake = self._wake
            while not self.stop_event.is_set():
                now = time.monotonic()
                if not (reads.due(now) or reads.full):
                    # wait for a read that may complete a window, or until the oldest held data is due
                    wake.wait(max(min(reads.wait_s(now, IDLE_S), self.link.outbox_wait_s(now)), 0.0005))
                    wake.clear()  # before the reads are taken in: a wake after this is not lost
                budget = time.monotonic() + LOOP_BUDGET_S  # then serve MQTT, even under a flood
                while (item := self._next_read()) is not None:
                    self.process(*item, defer=True)
                    now = time.monotonic()
                    if self._due_n and (self._due_n >= self._batch_full or now - self._due_since >= batch_wait_s):
                        self.classify_due()  # the batch is full, or its oldest window waited long enough
                    if now > budget:
                        break
                self.classify_due()  # nothing left to read (or the budget is spent): nothing stays due
                if self.flash is not None:
                    self.flash.apply_pending()  # model switches, between two frames
                    if self.spec is not self._batch_spec:
                        self._set_batching()  # the new model's batch sizes
                self.link.poll()
                now = time.monotonic()
                if now >= next_beat or self._status_now.is_set():
                    self._status_now.clear()
                    next_beat = now + cfg.heartbeat_s
                    self.link.set_retained(self.status_topic, self.status_payload())
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        if self.flash is not None:
            self.flash.stop()
            self.flash = None
        for w in self.wearables:
            if w.link is not None:
                try:
                    w.link.stop()
                except Exception as exc:  # noqa: BLE001 - closing must go on
                    log.warning("%s: closing serial: %s", w.cfg.wearer, exc)
                w.reconnects += int(getattr(w.link, "reconnects", 0) or 0)
                w.link = None
        self.classify_due()
        now = time.monotonic()
        for i, part in enumerate(self._partial):  # unfinished frames too: the decoder counts their bytes
            if part:
                self._data.append((i, part, now))
                self._partial[i] = b""
        while (item := self._next_read(drain=True)) is not None:  # finish what was already read
            self.process(*item)
        if self.sessions is not None:
            self.sessions.close()
        off = self._offline_payload(clean=True)
        self.link._retained.pop(self.status_topic, None)
        self.link.stop(self.status_topic, off)
        depth = len(self.queue)
        self.queue.close()
        self._lock.release()
        log.info("gateway %s stopped: %s; %d alert(s) left queued", self.cfg.gateway,
                 json.dumps({k: v for k, v in self.counters_safe().items()}), depth)

    def counters_safe(self) -> dict[str, Any]:
        try:
            return self.counters()
        except Exception:  # noqa: BLE001 - queue closed
            return {}


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    return load_config(args.config, {"port": args.port, "baud": args.baud, "bundle": args.bundle,
                                     "broker": args.broker, "gateway": args.gateway, "wearer": args.wearer,
                                     "state_dir": args.state_dir})


def cmd_run(args: argparse.Namespace) -> int:
    """``alanet run``."""
    cfg = config_from_args(args)
    if args.check:
        bundle, spec = load_model(cfg)
        print(f"config ok: gateway {cfg.gateway}, model {spec.model_id} ({spec.task}), broker {cfg.broker.url}, "
              f"wearables {', '.join(f'{w.wearer}@{w.port}' for w in cfg.wearables)}")
        return 0
    gw = Gateway(cfg)
    settle_heap()  # this process is the gateway: what starting allocated stays
    return gw.run()
