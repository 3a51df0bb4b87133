"""Rehab sessions per wearer: exercise context, start/stop, and a local session log.

During a rehab session the physiotherapist needs to know which exercise the patient
was doing when protective behaviour happened. :class:`SessionManager` keeps, per
wearer, the current exercise (set from the live page or an MQTT command, or reported
by the wearable's optional EXERCISE packet) and, between a start and a stop, a
session log: one JSON line per classified window (probabilities, smoothed value,
decision state, exercise, model, attention summary), per alert, per exercise change,
and data-quality counters. No raw biosignals are logged unless the operator turns
``[sessions] raw_frames`` on; wearer ids are the gateway's pseudonyms.

Files, under ``<state_dir>/sessions/<wearer>/``:

- ``<session>.jsonl``: the log, appended and flushed line by line (a crash loses no
  written window; ``fsync`` at most every ``fsync_s`` seconds and at stop/close);
- ``current.json``: the wearer's exercise and active session (atomic rewrite), so a
  restarted gateway resumes the session (a ``resume`` line marks the restart);
- ``<session>.csv`` / ``<session>.html``: the exports written at stop
  (:mod:`alanet.device.report`); ``history.json``: the summaries of past sessions.

Commands (:func:`parse_command`) and payloads are plain dicts; the runtime does the
MQTT I/O. Everything runs on the gateway's main thread.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from alanet import atomic
from alanet.firmware_bridge.protocol import EXERCISES

log = logging.getLogger("alanet.sessions")

LOG_VERSION = 1
SESSION_SCHEMA = "alanet.session/1"
HISTORY_SCHEMA = "alanet.history/1"
QUALITY_EVERY_S = 10.0  # at most one data-quality line per wearer this often
EXERCISE_LABELS = {
    "other": "other", "one_leg_stand": "one-leg stand", "reach_forward": "reach forward", "bend": "bend",
    "sit_to_stand": "sit-to-stand", "stand_to_sit": "stand-to-sit", "sitting_still": "sitting still",
    "standing_still": "standing still", "walking": "walking",
}
SOURCES = ("page", "mqtt", "wearable", "config")


def exercise_id(value: Any, where: str = "exercise") -> str | None:
    """An exercise id from the EmoPain vocabulary (``None``, ``""`` or ``"none"``: no exercise)."""
    if value is None or value in ("", "none"):
        return None
    if isinstance(value, str) and value in EXERCISES:
        return value
    raise ValueError(f"{where}: {value!r} is not an exercise (one of {', '.join(EXERCISES)}, or none)")


def exercise_label(value: str | None) -> str:
    return EXERCISE_LABELS.get(value, value) if value else "no exercise"


def utc_iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Command:
    """One parsed ``alanet/<gateway>/cmd/{session,exercise}`` message."""

    kind: str  # "session" | "exercise"
    wearer: str
    action: str | None = None  # session: start | stop | export
    exercise: str | None = None
    session: str | None = None  # export: which session
    source: str = "mqtt"


def parse_command(kind: str, payload: bytes, wearers: Iterable[str]) -> Command:
    """Check a command payload (see ``schemas/command.schema.json``); ValueError names the field."""
    try:
        d = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError("not a JSON object")
    wearer = d.get("wearer")
    if wearer not in set(wearers):
        raise ValueError(f"wearer: {wearer!r} is not a wearer of this gateway")
    source = d.get("source", "mqtt")
    if source not in SOURCES:
        raise ValueError(f"source: {source!r} is not one of {', '.join(SOURCES)}")
    if kind == "exercise":
        if "exercise" not in d:
            raise ValueError("exercise: missing")
        return Command("exercise", wearer, exercise=exercise_id(d["exercise"]), source=source)
    if kind == "session":
        action = d.get("action")
        if action not in ("start", "stop", "export"):
            raise ValueError(f"action: {action!r} is not start, stop or export")
        session = d.get("session")
        if action == "export" and not (isinstance(session, str) and session):
            raise ValueError("session: missing (which session to export)")
        ex = exercise_id(d["exercise"]) if "exercise" in d else None
        return Command("session", wearer, action=action, session=session, exercise=ex, source=source)
    raise ValueError(f"unknown command {kind!r}")


class SessionLog:
    """An append-only JSON-lines file: every line flushed, fsync'd at most every ``fsync_s`` seconds."""

    def __init__(self, path: Path, fsync_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "ab")
        if self._f.tell() > 0:  # a line cut by a power loss stays a line of its own (readers skip it)
            with open(path, "rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    self._f.write(b"\n")
        self.fsync_s = fsync_s
        self._clock = clock
        self._synced = clock()

    def write(self, record: Mapping[str, Any]) -> None:
        self._f.write(json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n")
        self._f.flush()
        if self._clock() - self._synced >= self.fsync_s:
            self.sync()

    def sync(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._synced = self._clock()

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()


class _Wearer:
    """Session state of one wearer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.exercise: str | None = None
        self.exercise_source: str | None = None
        self.exercise_since: float | None = None
        self.session: str | None = None
        self.started: float | None = None
        self.log: SessionLog | None = None
        self.raw: Any = None  # open raw-frames CSV file (raw_frames = true)
        self.windows = 0
        self.model: str | None = None
        self.device_code: int | None = None  # last EXERCISE code the wearable sent
        self.quality: dict[str, int] | None = None
        self.quality_t = 0.0
        self.last: dict[str, Any] | None = None  # summary of the last finished session


def _window_record(t: float, r: Any, exercise: str | None) -> dict[str, Any]:
    d: dict[str, Any] = {"k": "w", "t": round(t, 3), "te": r.t_end, "seq": r.seq, "n": r.window,
                         "p": [round(float(p), 5) for p in r.probs], "s": round(float(r.smoothed), 5), "st": r.state,
                         "ex": exercise}
    if r.attention is not None:
        d["att"] = r.attention.to_payload()
    return d


class SessionManager:
    """Exercise context and sessions of a gateway's wearers (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], gateway: str, wearers: Sequence[str], *,
                 raw_frames: bool = False, history_max: int = 50, fsync_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = Path(root)
        self.gateway = gateway
        self.raw_frames = raw_frames
        self.history_max = history_max
        self.fsync_s = fsync_s
        self.clock = clock
        self.wearers = {w: _Wearer(w) for w in wearers}
        for w in self.wearers.values():
            self._restore(w)

    # ---- files ----
    def wearer_dir(self, wearer: str) -> Path:
        return self.root / wearer

    def log_path(self, wearer: str, session: str) -> Path:
        return self.wearer_dir(wearer) / f"{session}.jsonl"

    def _save_current(self, w: _Wearer) -> None:
        atomic.write_text(self.wearer_dir(w.name) / "current.json", json.dumps({
            "exercise": w.exercise, "exercise_source": w.exercise_source, "exercise_since": w.exercise_since,
            "session": w.session, "started": w.started, "windows": w.windows, "model": w.model}))

    def _restore(self, w: _Wearer) -> None:
        path = self.wearer_dir(w.name) / "current.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            d = {}
        except (OSError, ValueError) as exc:
            log.error("%s: %s unreadable (%s); starting without an active session", w.name, path, exc)
            d = {}
        try:
            w.exercise = exercise_id(d.get("exercise"))
        except ValueError:
            w.exercise = None
        w.exercise_source, w.exercise_since = d.get("exercise_source"), d.get("exercise_since")
        history = self.history(w.name)
        w.last = history[-1] if history else None
        session = d.get("session")
        if isinstance(session, str) and session and self.log_path(w.name, session).is_file():
            w.session, w.started = session, float(d.get("started") or self.clock())
            w.windows, w.model = int(d.get("windows") or 0), d.get("model")
            w.windows = max(w.windows, _count_windows(self.log_path(w.name, session)))
            w.log = SessionLog(self.log_path(w.name, session), self.fsync_s)
            w.log.write({"k": "resume", "t": round(self.clock(), 3), "windows": w.windows})
            self._open_raw(w)
            log.info("%s: session %s resumed after a restart (%d windows logged so far)", w.name, session, w.windows)

    def _open_raw(self, w: _Wearer) -> None:
        if self.raw_frames and w.session:
            path = self.wearer_dir(w.name) / f"{w.session}.raw.csv"
            new = not path.exists()
            w.raw = open(path, "a", buffering=1)
            if new:
                from alanet.device.schema import EMOPAIN_ANGLES, EMOPAIN_EMG

                w.raw.write(",".join(["time", "seq", "t_ms", *[n for n, _ in EMOPAIN_ANGLES], *EMOPAIN_EMG]) + "\n")

    # ---- queries ----
    def context(self, wearer: str) -> dict[str, Any]:
        """``exercise`` and ``session`` for the wearer's state and alert payloads."""
        w = self.wearers[wearer]
        return {"exercise": w.exercise, "session": w.session}

    def active(self, wearer: str) -> str | None:
        return self.wearers[wearer].session

    def history(self, wearer: str) -> list[dict[str, Any]]:
        path = self.wearer_dir(wearer) / "history.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return [s for s in d if isinstance(s, dict)] if isinstance(d, list) else []
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.error("%s: %s unreadable (%s)", wearer, path, exc)
            return []

    def state_payload(self, wearer: str) -> dict[str, Any]:
        """The retained ``alanet/<gateway>/<wearer>/session`` message (``schemas/session.schema.json``)."""
        w = self.wearers[wearer]
        d: dict[str, Any] = {"schema": SESSION_SCHEMA, "gateway": self.gateway, "wearer": wearer,
                             "state": "active" if w.session else "idle", "session": w.session,
                             "started": utc_iso(w.started) if w.session and w.started else None,
                             "windows": w.windows if w.session else 0, "exercise": w.exercise,
                             "exercise_source": w.exercise_source,
                             "exercise_since": utc_iso(w.exercise_since) if w.exercise_since else None,
                             "time": utc_iso(self.clock())}
        if w.last:
            d["last"] = w.last
        return d

    def history_payload(self, wearer: str) -> dict[str, Any]:
        """The retained ``alanet/<gateway>/<wearer>/history`` message (``schemas/history.schema.json``)."""
        return {"schema": HISTORY_SCHEMA, "gateway": self.gateway, "wearer": wearer,
                "sessions": self.history(wearer)[-self.history_max:]}

    def export(self, wearer: str, session: str) -> bytes | None:
        """The gzipped log of one of the wearer's sessions (``None`` if there is no such session)."""
        if not session or any(c in session for c in "/\\") or session.startswith("."):
            return None
        path = self.log_path(wearer, session)
        if not path.is_file():
            return None
        w = self.wearers[wearer]
        if w.session == session and w.log is not None:
            w.log.sync()
        return gzip.compress(path.read_bytes(), mtime=0)

    # ---- inputs (main thread) ----
    def set_exercise(self, wearer: str, exercise: str | None, source: str) -> bool:
        """Change the wearer's exercise; True if it changed."""
        w = self.wearers[wearer]
        if exercise == w.exercise:
            return False
        now = self.clock()
        w.exercise, w.exercise_source, w.exercise_since = exercise, source, now
        if w.log is not None:
            w.log.write({"k": "ex", "t": round(now, 3), "ex": exercise, "source": source})
        self._save_current(w)
        log.info("%s: exercise %s (%s)", wearer, exercise_label(exercise), source)
        return True

    def device_exercise(self, wearer: str, code: int, name: str | None) -> bool:
        """An EXERCISE packet from the wearable: acts only when its code changes (see PROTOCOL.md)."""
        w = self.wearers[wearer]
        if code == w.device_code:
            return False
        w.device_code = code
        return self.set_exercise(wearer, name, "wearable")

    def start(self, wearer: str, spec: Any, source: str, exercise: str | None = None) -> str:
        """Start a session (a running one is kept); returns its id."""
        w = self.wearers[wearer]
        if exercise is not None:
            self.set_exercise(wearer, exercise, source)
        if w.session:
            return w.session
        now = self.clock()
        base = f"{wearer}-{datetime.fromtimestamp(now, timezone.utc):%Y%m%dT%H%M%SZ}"
        session, k = base, 1
        while self.log_path(wearer, session).exists():
            k += 1
            session = f"{base}-{k}"
        w.session, w.started, w.windows, w.model, w.quality = session, now, 0, spec.model_id, None
        w.log = SessionLog(self.log_path(wearer, session), self.fsync_s)
        dec = spec.decision or {}
        w.log.write({"k": "start", "v": LOG_VERSION, "t": round(now, 3), "time": utc_iso(now), "session": session,
                     "gateway": self.gateway, "wearer": wearer, "model": spec.model_id, "task": spec.task,
                     "labels": list(spec.labels), "stride_s": spec.stride / spec.sample_rate_hz,
                     "window_s": spec.length / spec.sample_rate_hz,
                     "threshold": dec.get("raise_threshold"), "clear_threshold": dec.get("clear_threshold"),
                     "exercise": w.exercise, "source": source, "raw_frames": self.raw_frames})
        w.log.sync()
        self._open_raw(w)
        self._save_current(w)
        log.info("%s: session %s started (%s)", wearer, session, source)
        return session

    def stop(self, wearer: str, source: str) -> dict[str, Any] | None:
        """Stop the wearer's session, write its CSV and HTML exports and add it to the history;
        returns its summary (``None`` if no session was running)."""
        from alanet.device import report

        w = self.wearers[wearer]
        if not w.session or w.log is None:
            return None
        w.log.write({"k": "stop", "t": round(self.clock(), 3), "source": source})
        w.log.close()
        path = w.log.path
        if w.raw is not None:
            w.raw.close()
            w.raw = None
        session = w.session
        w.session, w.log, w.started, w.windows = None, None, None, 0
        self._save_current(w)
        try:
            summary = report.write_exports(path)
        except (OSError, ValueError) as exc:  # the log stays; `alanet report` can retry
            log.error("%s: session %s: cannot write its report: %s", wearer, session, exc)
            summary = {"session": session, "error": str(exc)}
        history = self.history(wearer) + [summary]
        atomic.write_text(self.wearer_dir(wearer) / "history.json",
                          json.dumps(history[-self.history_max:], separators=(",", ":")))
        w.last = summary
        log.info("%s: session %s stopped (%s): %s", wearer, session, source, path.with_suffix(".html"))
        return summary

    def on_window(self, wearer: str, r: Any, model_id: str) -> None:
        """Log one classified window (``WindowResult``) of an active session."""
        w = self.wearers[wearer]
        if w.log is None:
            return
        now = self.clock()
        if model_id != w.model:
            w.log.write({"k": "model", "t": round(now, 3), "model": model_id})
            w.model = model_id
        w.log.write(_window_record(now, r, w.exercise))
        w.windows += 1

    def on_alert(self, wearer: str, alert: Mapping[str, Any]) -> None:
        """Log an alert (the payload as published) of an active session."""
        w = self.wearers[wearer]
        if w.log is None:
            return
        rec = {"k": "alert", "t": round(self.clock(), 3), "ex": w.exercise}
        rec.update({k: alert[k] for k in ("id", "type", "state", "level", "probability", "t_start", "t_end",
                                          "attention") if k in alert})
        w.log.write(rec)

    def on_frame(self, wearer: str, seq: int, t_ms: int, angles: Sequence[float], emg: Sequence[float]) -> None:
        """Raw frames, only with ``raw_frames`` on and a session running."""
        w = self.wearers[wearer]
        if w.raw is not None:
            w.raw.write(",".join([f"{self.clock():.3f}", str(seq), str(t_ms),
                                  *(f"{v:.6g}" for v in angles), *(f"{v:.6g}" for v in emg)]) + "\n")

    def on_quality(self, wearer: str, counters: Mapping[str, int], force: bool = False) -> None:
        """Data-quality counters of the wearer (cumulative in this gateway run): logged when they
        changed, at most every ``QUALITY_EVERY_S`` (always with ``force``)."""
        w = self.wearers[wearer]
        if w.log is None:
            return
        now = self.clock()
        q = {k: int(v) for k, v in counters.items()}
        if force or (q != w.quality and now - w.quality_t >= QUALITY_EVERY_S):
            w.log.write({"k": "q", "t": round(now, 3), **q})
            w.quality, w.quality_t = q, now

    def close(self) -> None:
        """Sync and close the open logs (sessions stay active and resume at the next start)."""
        for w in self.wearers.values():
            if w.log is not None:
                self._save_current(w)
                w.log.close()
                w.log = None
            if w.raw is not None:
                w.raw.close()
                w.raw = None


def _count_windows(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b'{"k":"w"'):
                n += 1
    return n
