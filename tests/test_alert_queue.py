"""The durable alert queue survives an abrupt end of the process."""

import subprocess
import sys
import textwrap

import pytest

from alanet.device.alert_queue import AlertQueue


def test_put_delete_order_and_idempotence(tmp_path):
    q = AlertQueue(tmp_path / "q.sqlite")
    for i in range(5):
        q.put(f"id{i}", f"t/{i}", f"p{i}".encode())
    q.put("id2", "t/2", b"again")  # same id: ignored
    assert len(q) == 5
    assert [a.id for a in q.pending()] == [f"id{i}" for i in range(5)]
    assert q.pending()[2].payload == b"p2"
    assert q.delete("id1") and not q.delete("id1")
    assert [a.id for a in q.pending(limit=2)] == ["id0", "id2"]
    assert len(q) == 4
    q.close()
    q2 = AlertQueue(tmp_path / "q.sqlite")
    assert len(q2) == 4 and q2.pending()[-1].topic == "t/4"


def test_bounded(tmp_path):
    q = AlertQueue(tmp_path / "q.sqlite", max_items=3)
    for i in range(5):
        q.put(f"id{i}", "t", b"x")
    assert [a.id for a in q.pending()] == ["id2", "id3", "id4"] and len(q) == 3


def test_survives_sigkill_right_after_put(tmp_path):
    """A process commits alerts and is killed (os._exit without close): all are there on reopen."""
    path = tmp_path / "q.sqlite"
    code = textwrap.dedent(f"""
        import os
        from alanet.device.alert_queue import AlertQueue
        q = AlertQueue({str(path)!r})
        for i in range(50):
            q.put("a%d" % i, "alanet/gw/w1/alert", b'{{"n": %d}}' % i)
        q.delete("a7")
        os.kill(os.getpid(), 9)
    """)
    r = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert r.returncode == -9
    q = AlertQueue(path)
    ids = [a.id for a in q.pending()]
    assert len(ids) == 49 and "a7" not in ids and ids[0] == "a0" and ids[-1] == "a49"
    assert q.pending()[10].payload == b'{"n": 11}'


def test_full_disk_holds_alerts_in_memory_then_commits_them(tmp_path):
    q = AlertQueue(tmp_path / "q.sqlite")
    q.put("a0", "t", b"x")
    pages = q._db.execute("PRAGMA page_count").fetchone()[0]
    q._db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: like a full disk
    for i in range(1, 40):
        q.put(f"a{i}", "t", b"y" * 500)  # must not raise
    assert q.held_in_memory > 0
    assert [a.id for a in q.pending()] == [f"a{i}" for i in range(40)]
    assert len(q) == 40
    assert q.delete("a39")  # an acknowledged held alert leaves memory
    q._db.execute("PRAGMA max_page_count = 1073741823")  # space is back
    q.put("a40", "t", b"z")
    assert q.held_in_memory == 0
    q.close()
    again = AlertQueue(tmp_path / "q.sqlite")
    assert [a.id for a in again.pending()] == [f"a{i}" for i in range(39)] + ["a40"]
    again.close()


def _alerts(q, n, start=0):
    import json
    import uuid

    ids = []
    for i in range(start, start + n):
        aid = str(uuid.uuid4())
        q.put(aid, f"alanet/gw/w{i % 3}/alert", json.dumps({"schema": "alanet.alert/1", "id": aid, "n": i}).encode())
        ids.append(aid)
    return ids


def _kill_with_alerts(path, n, checkpoint):
    """A gateway process that queued ``n`` alerts and died (in the WAL, or checkpointed into the file)."""
    code = textwrap.dedent(f"""
        import json, os, uuid
        from alanet.device.alert_queue import AlertQueue
        q = AlertQueue({str(path)!r})
        for i in range({n}):
            aid = str(uuid.uuid4())
            q.put(aid, "alanet/gw/w1/alert", json.dumps({{"schema": "alanet.alert/1", "id": aid, "n": i}}).encode())
        print(json.dumps([a.id for a in q.pending()]))
        if {checkpoint!r}:
            q._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        os.kill(os.getpid(), 9)
    """)
    r = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    import json

    return json.loads(r.stdout)


@pytest.mark.parametrize("where", ["file", "wal"])
def test_a_corrupt_file_is_moved_aside_and_its_alerts_salvaged(tmp_path, caplog, where):
    """'file is not a database' at open used to stop the gateway for good (a crash loop under systemd).

    ``file``: the alerts were checkpointed into the database file, whose header is then
    damaged. ``wal``: they sit in the WAL, whose header is damaged too (SQLite then
    ignores the WAL and finds a damaged file). Either way the bytes are scanned.
    """
    import logging

    path = tmp_path / "alerts.sqlite"
    ids = _kill_with_alerts(path, 20, checkpoint=where == "file")
    with open(path, "r+b") as f:  # a damaged first page: SQLite cannot even read the header
        f.write(b"\xde\xad\xbe\xef" * 25)
    if where == "wal":
        with open(path.with_name(path.name + "-wal"), "r+b") as f:
            f.write(b"\x00" * 32)
    with caplog.at_level(logging.ERROR):
        q = AlertQueue(path)
    assert q.recovered and "corrupt" in q.recovered and "20 alert(s) salvaged" in q.recovered
    assert any("ALERT QUEUE CORRUPT" in r.getMessage() for r in caplog.records)
    aside = list(tmp_path.glob("alerts.sqlite.corrupt-*"))
    assert aside and not any(p.name.endswith(".reserve") for p in aside)  # kept for inspection
    assert sorted(a.id for a in q.pending()) == sorted(ids)
    assert all(a.payload.startswith(b'{"schema": "alanet.alert/1"') and a.topic == "alanet/gw/w1/alert"
               for a in q.pending())
    _alerts(q, 3)
    assert len(q) == 23
    q.close()
    assert len(AlertQueue(path).pending()) == 23  # the fresh queue is a healthy file


def test_a_file_that_is_not_a_database_at_all_gives_a_fresh_queue(tmp_path):
    path = tmp_path / "alerts.sqlite"
    path.write_bytes(b"this is not a database, it is a text file\n" * 100)
    q = AlertQueue(path)
    assert q.recovered and len(q) == 0
    _alerts(q, 2)
    assert len(q) == 2


def _damaged_under_a_running_queue(path):
    """A queue of 200 alerts whose table pages are then overwritten under it; (queue, the ids)."""
    q = AlertQueue(path)
    ids = _alerts(q, 200)
    q._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with open(path, "r+b") as f:  # every page but the first: b-tree pages turn to garbage
        f.seek(4096)
        f.write(b"\x0d\xff" * ((size - 4096) // 2))
    q._db.execute("PRAGMA shrink_memory")  # the page cache goes (memory pressure): the next read sees the disk
    return q, ids


def test_corruption_found_while_running_is_recovered(tmp_path):
    """Damage discovered after open (here: the table's pages overwritten under the running queue)."""
    path = tmp_path / "alerts.sqlite"
    q, ids = _damaged_under_a_running_queue(path)
    q.put("after-damage", "alanet/gw/w1/alert", b'{"id": "after-damage"}')  # must not raise
    assert q.recovered and q.generation == 1
    left = {a.id for a in q.pending()}
    assert "after-damage" in left and left <= set(ids) | {"after-damage"}


def test_every_trim_is_logged_with_its_count(tmp_path, caplog):
    import logging

    q = AlertQueue(tmp_path / "q.sqlite", max_items=3)
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            q.put(f"id{i}", "t", b"x")
    trims = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(trims) == 2 and "dropped the 1 oldest (2 dropped since start)" in trims[-1]
    assert q.trimmed == 2


def test_after_reads_the_queue_by_position(tmp_path):
    q = AlertQueue(tmp_path / "q.sqlite")
    ids = _alerts(q, 10)
    first = q.after(0, 4)
    assert [a.id for a in first] == ids[:4]
    assert [a.id for a in q.after(first[-1].n, 100)] == ids[4:]


def test_put_many_and_delete_many_equal_one_at_a_time(tmp_path):
    """One transaction each, the same queue as put/delete one by one (order, idempotence, max_items)."""
    one, many = AlertQueue(tmp_path / "one.sqlite", max_items=7), AlertQueue(tmp_path / "many.sqlite", max_items=7)
    batches = [[(f"id{i}", f"t/{i}", b"p%d" % i) for i in range(k, k + 4)] for k in (0, 4, 2, 8)]  # ids repeat
    for b in batches:
        for a in b:
            one.put(*a)
        many.put_many(b)
    many.put_many([])
    assert [(a.id, a.topic, a.payload) for a in many.pending()] == [(a.id, a.topic, a.payload) for a in one.pending()]
    assert len(many) == len(one) == 7 and many.trimmed == one.trimmed == 5
    gone = ["id5", "id9", "nope", "id5"]
    assert many.delete_many(gone) == sum(one.delete(a) for a in gone) == 2
    assert [a.id for a in many.pending()] == [a.id for a in one.pending()] and len(many) == 5
    many.close()
    assert [a.id for a in AlertQueue(tmp_path / "many.sqlite").pending()] == [a.id for a in one.pending()]


def test_batches_survive_sigkill_right_after_commit(tmp_path):
    """A process commits alerts with put_many, acknowledges some with delete_many and is killed."""
    path = tmp_path / "q.sqlite"
    code = textwrap.dedent(f"""
        import os
        from alanet.device.alert_queue import AlertQueue
        q = AlertQueue({str(path)!r})
        for k in range(0, 50, 10):
            q.put_many([("a%d" % i, "alanet/gw/w1/alert", b'{{"n": %d}}' % i) for i in range(k, k + 10)])
        q.delete_many(["a7", "a8", "a30"])
        os.kill(os.getpid(), 9)
    """)
    r = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert r.returncode == -9
    ids = [a.id for a in AlertQueue(path).pending()]
    assert ids == [f"a{i}" for i in range(50) if i not in (7, 8, 30)]


def test_full_disk_batches_are_held_then_committed(tmp_path):
    """The disk refuses a batch: all of it is held in memory, acknowledged ones leave, the rest reach the disk later."""
    q = AlertQueue(tmp_path / "q.sqlite")
    q._reserve.unlink()  # no reserve left: the next refusal holds alerts
    q.put("a0", "t", b"x")
    pages = q._db.execute("PRAGMA page_count").fetchone()[0]
    q._db.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: like a full disk
    q.put_many([(f"a{i}", "t", b"y" * 2000) for i in range(1, 20)])  # must not raise
    assert q.held_in_memory == 19 and len(q) == 20
    assert [a.id for a in q.pending()] == [f"a{i}" for i in range(20)]
    assert q.delete_many(["a3", "a19", "a0"]) == 3
    q._db.execute("PRAGMA max_page_count = 1073741823")  # space is back
    q.put_many([("a20", "t", b"z")])
    assert q.held_in_memory == 0
    q.close()
    want = [f"a{i}" for i in range(1, 21) if i not in (3, 19)]
    assert [a.id for a in AlertQueue(tmp_path / "q.sqlite").pending()] == want


def test_corruption_found_by_a_batch_is_recovered(tmp_path):
    path = tmp_path / "alerts.sqlite"
    q, ids = _damaged_under_a_running_queue(path)
    q.put_many([("after-1", "alanet/gw/w1/alert", b'{"id": "after-1"}'),
                ("after-2", "alanet/gw/w1/alert", b'{"id": "after-2"}')])  # must not raise
    assert q.recovered and q.generation == 1
    left = {a.id for a in q.pending()}
    assert {"after-1", "after-2"} <= left <= set(ids) | {"after-1", "after-2"}
    assert q.delete_many(["after-1"]) == 1 and "after-1" not in {a.id for a in q.pending()}


def test_acknowledgements_skip_the_fsync_and_alerts_do_not(tmp_path):
    """A deletion runs as its own transaction under synchronous=NORMAL (no fsync: power lost before the
    next synced commit only sends an acknowledged alert again); every put commits under FULL."""
    q = AlertQueue(tmp_path / "q.sqlite")
    trace: list[str] = []
    q._db.set_trace_callback(trace.append)
    q.put_many([("a1", "t", b"{}"), ("a2", "t", b"{}")])
    q.delete_many(["a1"])
    q.put("a3", "t", b"{}")
    assert int(q._db.execute("PRAGMA synchronous").fetchone()[0]) == 2  # the connection's own: FULL
    mode = "FULL"
    modes = {}  # statement -> the synchronous mode it ran under
    for stmt in trace:
        up = stmt.upper()
        if up.startswith("PRAGMA SYNCHRONOUS="):
            mode = up.split("=")[1]
        elif up.startswith(("INSERT", "DELETE")):
            modes.setdefault(up.split()[0], set()).add(mode)
    assert modes == {"INSERT": {"FULL"}, "DELETE": {"NORMAL"}}
    assert int(q._db.execute("PRAGMA synchronous").fetchone()[0]) == 2  # FULL again after the deletion
    assert [a.id for a in q.pending()] == ["a2", "a3"]
    q.close()
    assert [a.id for a in AlertQueue(tmp_path / "q.sqlite").pending()] == ["a2", "a3"]


def test_the_version_changes_with_every_put(tmp_path):
    q = AlertQueue(tmp_path / "q.sqlite")
    v = q.version
    q.put("a1", "t", b"{}")
    assert q.version > v
    v = q.version
    q.delete("a1")
    assert q.version == v  # a deletion queues nothing new
    q.put_many([("a2", "t", b"{}")])
    assert q.version > v


def test_a_put_after_a_failed_return_to_full_sets_full_first(tmp_path):
    """Should the deletion's NORMAL fail to go back to FULL, the next put sets FULL before it commits."""
    q = AlertQueue(tmp_path / "q.sqlite")
    q.put("a1", "t", b"{}")
    q.delete("a1")
    q._db.execute("PRAGMA synchronous=NORMAL")
    q._sync_full = False  # as a refused PRAGMA after the deletion leaves it
    trace: list[str] = []
    q._db.set_trace_callback(trace.append)
    q.put("a2", "t", b"{}")
    sets = [t.upper() for t in trace if t.upper().startswith("PRAGMA SYNCHRONOUS=") or t.upper().startswith("INSERT")]
    assert sets[0] == "PRAGMA SYNCHRONOUS=FULL" and sets[1].startswith("INSERT")
    assert int(q._db.execute("PRAGMA synchronous").fetchone()[0]) == 2
