"""The durable alert queue survives an abrupt end of the process."""

import subprocess
import sys
import textwrap

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
