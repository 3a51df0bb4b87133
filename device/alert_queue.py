"""A durable on-disk alert queue (SQLite, WAL): write before publish, delete on PUBACK.

An alert is committed (fsync'd) to the queue before the gateway tries to publish it
and removed only when the broker has acknowledged it (MQTT QoS 1 PUBACK). Neither a
broker outage nor a crash of the gateway process (SIGKILL, power loss after commit)
loses it: on the next start the runtime publishes whatever the queue still holds.
Delivery is therefore at-least-once; every alert carries a unique id so subscribers
drop duplicates.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class QueuedAlert:
    id: str
    topic: str
    payload: bytes
    created: float


class AlertQueue:
    """Thread-safe FIFO of alerts in an SQLite file (one connection, one lock)."""

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

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def put(self, alert_id: str, topic: str, payload: bytes) -> None:
        """Commit one alert (idempotent on ``alert_id``). Oldest entries go past ``max_items``."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO alerts (id, topic, payload, created) VALUES (?, ?, ?, ?)",
                                   (alert_id, topic, bytes(payload), time.time()))
            self._depth += cur.rowcount
            if self._depth > self.max_items:
                self._db.execute("DELETE FROM alerts WHERE n IN (SELECT n FROM alerts ORDER BY n LIMIT ?)",
                                 (self._depth - self.max_items,))
                self._depth = self._count()

    def delete(self, alert_id: str) -> bool:
        """Remove an acknowledged alert; False if it was not (or no longer) queued."""
        with self._lock:
            cur = self._db.execute("DELETE FROM alerts WHERE id = ?", (alert_id,))
            self._depth -= cur.rowcount
            return cur.rowcount > 0

    def pending(self, limit: int | None = None) -> list[QueuedAlert]:
        """Queued alerts, oldest first."""
        with self._lock:
            sql = "SELECT id, topic, payload, created FROM alerts ORDER BY n"
            rows = self._db.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
        return [QueuedAlert(r[0], r[1], bytes(r[2]), float(r[3])) for r in rows]

    def __len__(self) -> int:
        return self._depth

    def close(self) -> None:
        with self._lock:
            self._db.close()
