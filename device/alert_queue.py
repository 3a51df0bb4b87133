"""A durable on-disk alert queue (SQLite, WAL): write before publish, delete on PUBACK.

An alert is committed (fsync'd) to the queue before the gateway tries to publish it
and removed only when the broker has acknowledged it (MQTT QoS 1 PUBACK). Neither a
broker outage nor a crash of the gateway process (SIGKILL, power loss after commit)
loses it: on the next start the runtime publishes whatever the queue still holds.
Delivery is therefore at-least-once; every alert carries a unique id so subscribers
drop duplicates. Deleting an acknowledged alert does not wait for the disk (the next
put's fsync carries it): power lost in between at most sends that alert again. :meth:`AlertQueue.put_many` and :meth:`AlertQueue.delete_many` do the
same for several alerts in one transaction (one fsync): the runtime commits the alerts
of one loop iteration, and the acknowledgements it drained, at once.

A full disk is planned for. The queue keeps a reserve file (``<queue>.reserve``) beside
its database and deletes it when the disk first refuses a write, so the alerts decided
while someone frees space still reach the disk. Past the reserve the queue does not
fail the gateway either: the alert is held in memory (and still published), the
condition is logged once, and held alerts move to disk as soon as a write succeeds
again; only alerts held in memory at that moment are lost if the process then dies.

A corrupt file (an SD card's damaged page, a truncated copy) is planned for too. At
open (``PRAGMA quick_check``) or whenever SQLite reports corruption later, the file
and its WAL are moved aside as ``<queue>.corrupt-<time>`` (kept for inspection, never
deleted), the alerts still readable in them are salvaged (by SQL when SQLite can
read the file, else by scanning its bytes for queue rows: an alert id, its topic and
its JSON payload naming the same id), and a fresh queue starts with them. It is logged
loudly and stays visible in :attr:`AlertQueue.recovered` (the gateway reports it on its
status topic). Deleted rows are overwritten (``secure_delete``), so a salvage does not
bring back alerts that were already delivered, except from the WAL's older pages
(at-least-once: subscribers drop those by id).

Past ``max_items`` the oldest alerts are dropped; every such trim is logged with its
count and counted in :attr:`AlertQueue.trimmed`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

log = logging.getLogger("alanet.alert_queue")

_ROW = re.compile(rb"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})([\x20-\x7a\x7c\x7e]{1,512}?)(?=\{)")
_JSON = json.JSONDecoder()
MAX_PAYLOAD = 64 << 10


@dataclass(frozen=True)
class QueuedAlert:
    id: str
    topic: str
    payload: bytes
    created: float
    n: int = 0  # position in the queue (row number; 0 for an alert held in memory)


def _corruption(exc: BaseException) -> bool:
    """An SQLite error that means the file is damaged (not a full disk, a lock or a closed handle)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, (sqlite3.OperationalError,
                                                                           sqlite3.ProgrammingError,
                                                                           sqlite3.IntegrityError))


def salvage(path: Path) -> list[QueuedAlert]:
    """The alerts still readable in a (corrupt) queue file ``path`` and its ``-wal``, oldest first.

    By SQL when SQLite can read the table, else by scanning the bytes for rows. Never raises.
    """
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            rows = db.execute("SELECT id, topic, payload, created FROM alerts ORDER BY n").fetchall()
        finally:
            db.close()
        if rows:
            return [QueuedAlert(str(r[0]), str(r[1]), bytes(r[2]), float(r[3])) for r in rows]
    except (sqlite3.Error, ValueError, TypeError):
        pass
    found: dict[str, QueuedAlert] = {}
    for part in (path, path.with_name(path.name + "-wal")):
        try:
            data = part.read_bytes()
        except OSError:
            continue
        for m in _ROW.finditer(data):
            aid = m.group(1).decode()
            text = data[m.end():m.end() + MAX_PAYLOAD].decode("latin-1")
            try:
                obj, end = _JSON.raw_decode(text)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("id") == aid:
                found.setdefault(aid, QueuedAlert(aid, m.group(2).decode(), text[:end].encode("latin-1"), time.time()))
    return list(found.values())


class AlertQueue:
    """Thread-safe FIFO of alerts in an SQLite file (one connection, one lock)."""

    RESERVE_BYTES = 256 << 10  # room for a few dozen alerts (WAL pages) while space is freed

    def __init__(self, path: str | Path, max_items: int = 100_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._lock = threading.Lock()
        self.trimmed = 0  # oldest alerts dropped past max_items
        self.recovered: str | None = None  # set when a corrupt file was moved aside (what happened)
        self.generation = 0  # +1 at every recovery (positions ``n`` start again from 1)
        self.version = 0  # +1 at every put (a sender that saw everything queued need not look again before it changes)
        self._held: dict[str, QueuedAlert] = {}  # alerts the disk refused (see the module docstring)
        self._acked_unsaved: set[str] = set()  # acknowledged, but the disk refused the delete
        self._disk_failing = False
        try:
            self._connect()
            ok = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {ok}")
        except sqlite3.DatabaseError as exc:
            if not _corruption(exc):
                raise OSError(f"{self.path}: cannot open the alert queue: {exc}") from None
            self._recover(exc)
        self._depth = self._count()
        self._reserve = self.path.with_name(self.path.name + ".reserve")
        self._make_reserve()

    def _connect(self) -> None:
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._sync_full = True
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS alerts (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, "
            "topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL)")

    def _recover(self, exc: BaseException) -> None:
        """Move the corrupt file (and its WAL) aside, salvage what it holds, start afresh with that.

        The files move before the connection closes: closing would delete a WAL SQLite cannot use.
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        k = 1
        while aside.exists():
            k += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{k}")
        for suffix in ("", "-wal", "-shm"):
            src = self.path.with_name(self.path.name + suffix)
            if src.exists():
                os.replace(src, aside.with_name(aside.name + suffix))
        try:
            self._db.close()
        except (AttributeError, sqlite3.Error):
            pass
        rescued = salvage(aside)
        self._connect()
        self._db.execute("BEGIN")
        for a in rescued[-self.max_items:]:
            self._db.execute("INSERT OR IGNORE INTO alerts (id, topic, payload, created) VALUES (?, ?, ?, ?)",
                             (a.id, a.topic, a.payload, a.created))
        self._db.execute("COMMIT")
        self.generation += 1
        self.version += 1
        self.recovered = (f"{self.path} was corrupt ({exc}); moved aside as {aside.name}, "
                          f"{len(rescued)} alert(s) salvaged into a fresh queue")
        log.error("ALERT QUEUE CORRUPT: %s", self.recovered)

    def _recover_now(self, exc: BaseException) -> None:
        """Corruption found while running (lock held): recover, keep the count right."""
        self._recover(exc)
        self._acked_unsaved.clear()
        self._depth = self._count()

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
        module docstring); it is still returned by :meth:`pending`. (:meth:`put_many` of one.)
        """
        self.put_many([(alert_id, topic, payload)])

    def put_many(self, items: Sequence[tuple[str, str, bytes]]) -> None:
        """Commit several alerts ``(alert_id, topic, payload)`` in one transaction (one fsync).

        The same as :meth:`put` for each, in order (idempotent ids, the ``max_items`` rule,
        the reserve and the held-in-memory fallback), at the cost of one commit: either
        all of them reach the disk or, when the disk refuses, all are held in memory.
        """
        items = [(str(a), str(t), bytes(p)) for a, t, p in items]
        if not items:
            return
        with self._lock:
            self.version += 1
            try:
                self._put_many(items)
            except sqlite3.DatabaseError as exc:
                if not _corruption(exc):
                    raise
                self._recover_now(exc)
                self._put_many(items)

    def _put_many(self, items: list[tuple[str, str, bytes]]) -> None:
        if self._held and not self._flush_held():
            for a, t, p in items:
                self._hold(a, t, p)
            return
        try:
            self._insert_all(items)
        except sqlite3.OperationalError as exc:
            try:
                if not self._release_reserve():
                    raise
                self._insert_all(items)
            except sqlite3.OperationalError:
                self._disk_error(exc)
                for a, t, p in items:
                    self._hold(a, t, p)
                return
        self._retry_acked_unsaved()

    def _insert_all(self, items: list[tuple[str, str, bytes]]) -> None:
        """Insert ``items`` in one transaction; on an error nothing is inserted and the counts are restored."""
        depth, trimmed = self._depth, self.trimmed
        now = time.time()
        try:
            if not self._sync_full:  # never commit an alert under the deletions' NORMAL
                self._rollback()
                self._db.execute("PRAGMA synchronous=FULL")
                self._sync_full = True
            self._db.execute("BEGIN")
            for a, t, p in items:
                self._insert(a, t, p, now)
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()
            self._depth, self.trimmed = depth, trimmed
            raise

    def _retry_acked_unsaved(self) -> None:
        """Apply the deletes a full disk refused earlier (the disk took a write again)."""
        for done in list(self._acked_unsaved):
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
            k = self._depth - self.max_items
            self._db.execute("DELETE FROM alerts WHERE n IN (SELECT n FROM alerts ORDER BY n LIMIT ?)", (k,))
            self._depth = self._count()
            self.trimmed += k
            log.warning("alert queue %s: more than %d alerts queued: dropped the %d oldest (%d dropped since start)",
                        self.path, self.max_items, k, self.trimmed)

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
        self.version += 1
        self._held.clear()
        self._disk_failing = False
        self._make_reserve()
        return True

    def delete(self, alert_id: str) -> bool:
        """Remove an acknowledged alert; False if it was not (or no longer) queued (:meth:`delete_many` of one)."""
        return self.delete_many([alert_id]) > 0

    def delete_many(self, alert_ids: Iterable[str]) -> int:
        """Remove several acknowledged alerts in one transaction; returns how many were queued.

        The same as :meth:`delete` for each: when the disk refuses the transaction, all of
        them are remembered as acknowledged (never handed out again) and deleted later.
        """
        with self._lock:
            ids = []
            n = 0
            for a in dict.fromkeys(alert_ids):  # in order, once each
                if self._held.pop(a, None) is not None:
                    n += 1
                else:
                    ids.append(a)
            if not ids:
                return n
            try:
                removed = self._delete_all(ids)
            except sqlite3.OperationalError as exc:  # a full disk can refuse even a delete (WAL growth)
                self._disk_error(exc)
                self._acked_unsaved.update(ids)
                return n + len(ids)
            except sqlite3.DatabaseError as exc:
                if not _corruption(exc):
                    raise
                self._recover_now(exc)
                removed = self._delete_all(ids)
            self._depth -= removed
            return n + removed

    def _delete_all(self, ids: list[str]) -> int:
        """Delete ``ids`` in one transaction that does not wait for the disk (``synchronous=NORMAL``
        for it alone; WAL keeps the file consistent). Power lost before the next synced commit
        can bring the deletion back: an acknowledged alert is then sent again, a duplicate that
        at-least-once delivery already allows (subscribers drop it by id). Puts stay ``FULL``:
        an alert is on disk before it is published, and its fsync also carries every deletion
        before it."""
        try:
            self._sync_full = False
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN")
            removed = self._db.executemany("DELETE FROM alerts WHERE id = ?", [(a,) for a in ids]).rowcount
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()
            raise
        finally:
            self._synchronous_full()
        return removed

    def _synchronous_full(self) -> None:
        """Back to FULL after a deletion; when SQLite refuses (a transaction a failed ROLLBACK left
        open), the next put sets it before it begins (:meth:`_insert_all`)."""
        try:
            self._db.execute("PRAGMA synchronous=FULL")
            self._sync_full = True
        except sqlite3.Error:
            pass

    def _rollback(self) -> None:
        """End a failed transaction (a damaged file may refuse even that: recovery replaces it then)."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _rows(self, sql: str, args: tuple) -> list:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            if not _corruption(exc):
                raise
            self._recover_now(exc)
            return self._db.execute(sql, args).fetchall()

    def pending(self, limit: int | None = None) -> list[QueuedAlert]:
        """Queued alerts, oldest first (on disk, then held in memory)."""
        with self._lock:
            sql = "SELECT id, topic, payload, created, n FROM alerts ORDER BY n"
            rows = self._rows(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
            out = [QueuedAlert(r[0], r[1], bytes(r[2]), float(r[3]), int(r[4])) for r in rows
                   if r[0] not in self._acked_unsaved]
            out += list(self._held.values())
        return out[:limit] if limit else out

    def after(self, n: int, limit: int) -> list[QueuedAlert]:
        """Up to ``limit`` alerts on disk queued after position ``n`` (oldest first), then those held in memory.

        A sender hands alerts over in windows by remembering the last position it took,
        so it never reads the whole backlog again.
        """
        with self._lock:
            rows = self._rows("SELECT id, topic, payload, created, n FROM alerts WHERE n > ? ORDER BY n LIMIT ?",
                              (n, limit))
            out = [QueuedAlert(r[0], r[1], bytes(r[2]), float(r[3]), int(r[4])) for r in rows
                   if r[0] not in self._acked_unsaved]
            out += list(self._held.values())[:limit]
        return out

    @property
    def acked_unsaved(self) -> int:
        """Acknowledged alerts whose deletion the disk refused (:meth:`after` skips them: it can then
        return fewer than its limit while more alerts are queued)."""
        return len(self._acked_unsaved)

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
