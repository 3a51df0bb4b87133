"""The running gateway's side of rehab sessions: commands, retained topics, logging hooks.

:class:`GatewaySessions` joins a :class:`~alanet.device.runtime.Gateway` and its
:class:`~alanet.device.sessions.SessionManager`; the runtime calls its hooks from its
main thread:

- :meth:`GatewaySessions.start` subscribes to ``alanet/<gateway>/cmd/session`` and
  ``cmd/exercise`` and publishes each wearer's retained ``session`` and ``history``;
- :meth:`GatewaySessions.runs` applies the wearable's EXERCISE packets in stream
  order (between the runs of other packets it yields) and logs raw frames when the
  operator turned that on;
- :meth:`GatewaySessions.on_window` / :meth:`GatewaySessions.on_alert` log a session's
  windows and alerts and give the ``exercise`` / ``session`` fields of the payloads;
- :meth:`GatewaySessions.close` syncs the logs at shutdown (sessions stay active).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterator, Mapping, Sequence

from alanet.device.sessions import SessionManager, parse_command
from alanet.firmware_bridge.protocol import Exercise, Frame, FrameBlock, Hello

log = logging.getLogger("alanet.sessions")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


class GatewaySessions:
    """Sessions of one running gateway (see the module docstring)."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        cfg = gw.cfg
        self.names = [w.cfg.wearer for w in gw.wearables]
        self.manager = SessionManager(cfg.sessions_dir, cfg.gateway, self.names, raw_frames=cfg.sessions.raw_frames,
                                      history_max=cfg.sessions.history)
        self.commands = 0
        self.refused = 0

    def topic(self, *parts: str) -> str:
        return "/".join(("alanet", self.gw.cfg.gateway, *parts))

    # ---- MQTT ----
    def start(self) -> None:
        link = self.gw.link
        for kind in ("session", "exercise"):
            link.subscribe(self.topic("cmd", kind), self._command)
        for name in self.names:
            self.publish_state(name)
            link.set_retained(self.topic(name, "history"), _dumps(self.manager.history_payload(name)))

    def publish_state(self, wearer: str) -> None:
        self.gw.link.set_retained(self.topic(wearer, "session"), _dumps(self.manager.state_payload(wearer)))

    def _command(self, topic: str, payload: bytes) -> None:
        kind = topic.rsplit("/", 1)[-1]
        try:
            cmd = parse_command(kind, payload, self.names)
        except ValueError as exc:
            self.refused += 1
            log.warning("%s: command refused: %s", topic, exc)
            return
        self.commands += 1
        m, name = self.manager, cmd.wearer
        if cmd.kind == "exercise":
            if m.set_exercise(name, cmd.exercise, cmd.source):
                self.publish_state(name)
        elif cmd.action == "start":
            m.start(name, self.gw.spec, cmd.source, exercise=cmd.exercise)
            self._quality(self.gw.wearables[self.names.index(name)], force=True)
            self.publish_state(name)
        elif cmd.action == "stop":
            self._quality(self.gw.wearables[self.names.index(name)], force=True)
            if m.stop(name, cmd.source) is not None:
                self.gw.link.set_retained(self.topic(name, "history"), _dumps(m.history_payload(name)))
            self.publish_state(name)
        elif cmd.action == "export":
            data = m.export(name, cmd.session or "")
            if data is None:
                log.warning("%s: export of session %r refused: no such session", name, cmd.session)
                return
            self.gw.link.publish(self.topic(name, "session", cmd.session or "", "log"), data, qos=1)

    # ---- main-loop hooks ----
    def plain(self, i: int, packets: Sequence[Any]) -> bool:
        """True when the hooks have nothing to do with ``packets``: no EXERCISE packet, no raw frames logged."""
        m = self.manager
        return not (m.raw_frames and m.active(self.names[i]) is not None) and \
            not any(type(p) is Exercise for p in packets)

    def runs(self, i: int, packets: Sequence[Any]) -> Iterator[list[Any]]:
        """``packets`` split at the wearable's EXERCISE packets, which are applied in between (and,
        while raw frames are logged, after each HELLO, so only frames the pipeline accepts are logged)."""
        name = self.names[i]
        m = self.manager
        if self.plain(i, packets):  # the usual case: nothing to split
            yield list(packets)
            return
        raw = m.raw_frames and m.active(name) is not None
        pipeline = self.gw.wearables[i].pipeline
        run: list[Any] = []
        for p in packets:
            if type(p) is Exercise:
                if run:
                    yield run
                    run = []
                # like its frames, the exercise of a wearable without an accepted HELLO is ignored
                if pipeline.accepting and m.device_exercise(name, p.code, p.name):
                    self.publish_state(name)
            else:
                if raw and type(p) in (Frame, FrameBlock):
                    for f in (p,) if type(p) is Frame else p.frames():
                        if pipeline.accepts(f):  # only frames the pipeline takes
                            m.on_frame(name, f.seq, f.t_ms, f.angles, f.emg)
                run.append(p)
                if raw and type(p) is Hello:  # the pipeline judges it before the next frames are checked
                    yield run
                    run = []
        if run:
            yield run

    def on_window(self, i: int, r: Any) -> dict[str, Any]:
        """Log the window (active session) and return the payloads' ``exercise`` and ``session``."""
        name = self.names[i]
        self.manager.on_window(name, r, self.gw.spec.model_id)
        if self.manager.active(name):
            self._quality(self.gw.wearables[i])
        return self.manager.context(name)

    def on_alert(self, i: int, alert: Mapping[str, Any]) -> None:
        self.manager.on_alert(self.names[i], alert)

    def _quality(self, w: Any, force: bool = False) -> None:
        p, s = w.pipeline.counters, w.decoder.stats
        self.manager.on_quality(w.cfg.wearer, {
            "frames": p.frames, "gaps": p.gaps, "lost": p.lost, "resets": p.resets, "crc_errors": s.crc_errors,
            "framing_errors": s.framing_errors, "malformed": s.malformed,
            "serial_reconnects": w.reconnects + int(getattr(w.link, "reconnects", 0) or 0)}, force=force)

    def close(self) -> None:
        for w in self.gw.wearables:
            self._quality(w, force=True)
        self.manager.close()
