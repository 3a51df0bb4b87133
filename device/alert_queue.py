"""A durable on-disk alert queue (SQLite, WAL): write before publish, delete on PUBACK.

An alert is committed (fsync'd) to the queue before the gateway tries to publish it
and removed only when the broker has acknowledged it (MQTT QoS 1 PUBACK). Neither a
broker outage nor a crash of the gateway process (SIGKILL, power loss after commit)
loses it: on the next start the runtime publishes whatever the queue still holds.
Delivery is therefore at-least-once; every alert carries a unique id so subscribers
drop duplicates.

A full disk is planned for. The queue keeps a reserve file (``<queue>.reserve``) beside
its database and deletes it when the disk first refuses a write, so the alerts decided
while someone frees space still reach the disk. Past the reserve the queue does not
fail the gateway either: the alert is held in memory (and still published), the
condition is logged once, and held alerts move to disk as soon as a write succeeds
again; only alerts held in memory at that moment are lost if the process then dies.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("alanet.alert_queue")


@dataclass(frozen=True)
class QueuedAlert:
    id: str
    topic: str
    payload: bytes
    created: float


class AlertQueue:
    """Thread-safe FIFO of alerts in an SQLite file (one connection, one lock)."""

    RESERVE_BYTES = 256 << 10  # room for a few dozen alerts (WAL pages) while space is freed

    def __init__(self, path: str | Path, max_items: int = 100_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS alerts (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, "
                "topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL)")
        except sqlite3.DatabaseError as exc:
            raise OSError(f"{self.path}: cannot open the alert queue: {exc}") from None
        self._depth = self._count()
        self._held: dict[str, QueuedAlert] = {}  # alerts the disk refused (see the module docstring)
        self._acked_unsaved: set[str] = set()  # acknowledged, but the disk refused the delete
        self._disk_failing = False
        self._reserve = self.path.with_name(self.path.name + ".reserve")
        self._make_reserve()

    def _make_reserve(self) -> None:
        if self._reserve.exists():
            return
        try:
            with open(self._reserve, "wb") as f:
                f.write(b"\0" * self.RESERVE_BYTES)
                f.flush()
                os.fsync(f.fileno())
        except OSError:  # no room for it now; try again when the disk has space
            self._reserve.unlink(missing_ok=True)

    def _release_reserve(self) -> bool:
        try:
            self._reserve.unlink()
        except OSError:
            return False
        log.error("alert queue %s: the disk is full; released the %d KiB reserve to keep committing alerts. "
                  "Free space in %s", self.path, self.RESERVE_BYTES >> 10, self.path.parent)
        return True

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def put(self, alert_id: str, topic: str, payload: bytes) -> None:
        """Commit one alert (idempotent on ``alert_id``). Oldest entries go past ``max_items``.

        If the disk refuses the write, the alert is held in memory instead (see the
        module docstring); it is still returned by :meth:`pending`.
        """
        with self._lock:
            if self._held and not self._flush_held():
                self._hold(alert_id, topic, payload)
                return
            try:
                self._insert(alert_id, topic, bytes(payload), time.time())
            except sqlite3.OperationalError as exc:
                try:
                    if not self._release_reserve():
                        raise
                    self._insert(alert_id, topic, bytes(payload), time.time())
                except sqlite3.OperationalError:
                    self._disk_error(exc)
                    self._hold(alert_id, topic, payload)
                    return
            for done in list(self._acked_unsaved):  # deletes the full disk refused earlier
                try:
                    self._depth -= self._db.execute("DELETE FROM alerts WHERE id = ?", (done,)).rowcount
                    self._acked_unsaved.discard(done)
                except sqlite3.OperationalError:
                    break

    def _insert(self, alert_id: str, topic: str, payload: bytes, created: float) -> None:
        cur = self._db.execute("INSERT OR IGNORE INTO alerts (id, topic, payload, created) VALUES (?, ?, ?, ?)",
                               (alert_id, topic, payload, created))
        self._depth += cur.rowcount
        if self._depth > self.max_items:
            self._db.execute("DELETE FROM alerts WHERE n IN (SELECT n FROM alerts ORDER BY n LIMIT ?)",
                             (self._depth - self.max_items,))
            self._depth = self._count()

    def _hold(self, alert_id: str, topic: str, payload: bytes) -> None:
        if alert_id not in self._held:
            self._held[alert_id] = QueuedAlert(alert_id, topic, bytes(payload), time.time())

    def _disk_error(self, exc: Exception) -> None:
        if not self._disk_failing:
            log.error("alert queue %s: cannot write (%s): holding alerts in memory until the disk takes writes "
                      "again; they are delivered meanwhile but lost if the gateway stops first", self.path, exc)
        self._disk_failing = True

    def _flush_held(self) -> bool:
        """Move held alerts to disk; True when none is left in memory."""
        try:
            self._db.execute("BEGIN")
            for a in self._held.values():
                self._insert(a.id, a.topic, a.payload, a.created)
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._depth = self._count()
            self._disk_error(exc)
            return False
        log.warning("alert queue %s: disk writable again; %d held alert(s) committed", self.path, len(self._held))
        self._held.clear()
        self._disk_failing = False
        self._make_reserve()
        return True

    def delete(self, alert_id: str) -> bool:
        """Remove an acknowledged alert; False if it was not (or no longer) queued."""
        with self._lock:
            if self._held.pop(alert_id, None) is not None:
                return True
            try:
                cur = self._db.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
            except sqlite3.OperationalError as exc:  # a full disk can refuse even a delete (WAL growth)
                self._disk_error(exc)
                self._acked_unsaved.add(alert_id)
                return True
            self._depth -= cur.rowcount
            return cur.rowcount > 0

    def pending(self, limit: int | None = None) -> list[QueuedAlert]:
        """Queued alerts, oldest first (on disk, then held in memory)."""
        with self._lock:
            sql = "SELECT id, topic, payload, created FROM alerts ORDER BY n"
            rows = self._db.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
            out = [QueuedAlert(r[0], r[1], bytes(r[2]), float(r[3])) for r in rows if r[0] not in self._acked_unsaved]
            out += list(self._held.values())
        return out[:limit] if limit else out

    @property
    def held_in_memory(self) -> int:
        """Alerts the disk refused, kept in memory."""
        return len(self._held)

    def __len__(self) -> int:
        return self._depth - len(self._acked_unsaved) + len(self._held)

    def close(self) -> None:
        with self._lock:
            if self._held and not self._flush_held():
                log.error("alert queue %s: %d alert(s) could not be written to disk and are lost",
                          self.path, len(self._held))
            self._db.close()
