"""Alert throughput through the durable queue to a real Mosquitto (QoS 1).

    python bench/mqtt_throughput.py [--alerts 2000] [--quick]

The gateway's own path: ``MqttLink.publish_alert`` commits each alert to the SQLite
queue (WAL, ``synchronous=FULL``: one fsync per alert), hands it to paho (QoS 1),
and ``poll()`` deletes it when the broker's PUBACK arrives. A QoS 1 subscriber on
the same Mosquitto counts unique alert ids. Two runs:

- live: alerts published back to back while connected; alerts/s = N / (time until
  the subscriber holds all N and the queue is empty);
- backlog: N alerts queued while the broker is down, then the broker starts; drain
  rate = N / (gateway reconnected → all received and the queue empty).

Also reports the cost of one durable commit, and the queue's cost per alert committed
one at a time (``AlertQueue.put`` / ``delete``) against batches (``put_many`` /
``delete_many``, one transaction each), interleaved rounds on one file, median of the
rounds. Writes ``bench/results/mqtt_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, Figure, pct, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))


class Counter:
    """QoS 1 subscriber counting unique alert ids (persistent session)."""

    def __init__(self, port: int, client_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.ids: set[str] = set()
        self.received = 0
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: (c.subscribe("alanet/tp/#", qos=1), self.ready.set())
        self.c.on_message = self._msg
        self.c.reconnect_delay_set(0.05, 0.2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _msg(self, c, u, m) -> None:
        if not m.topic.endswith("/alert"):
            return
        d = json.loads(m.payload)
        with self.lock:
            self.received += 1
            self.ids.add(d["id"])

    def count(self) -> int:
        with self.lock:
            return len(self.ids)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _link(url: str, qpath: Path):
    from alanet.device.alert_queue import AlertQueue
    from alanet.device.config import load_config
    from alanet.device.mqtt_link import MqttLink

    cfg = load_config(None, {"port": "/dev/null", "bundle": "x", "broker": url, "gateway": "tp",
                             "state_dir": str(qpath.parent)})
    q = AlertQueue(qpath)
    return MqttLink(cfg.broker, client_id=f"tp-{uuid.uuid4().hex[:6]}", alert_queue=q,
                    will_topic="alanet/tp/status", will_payload=b'{"state":"offline"}'), q


def _payload(i: int) -> tuple[str, bytes]:
    aid = str(uuid.uuid4())
    return aid, json.dumps({"schema": "alanet.alert/1", "id": aid, "gateway": "tp", "wearer": f"w{i % 10}",
                            "type": "protective", "state": "raised", "probability": 0.91, "t_start": i * 0.75,
                            "t_end": i * 0.75 + 3.0, "model": "bench", "seq": i}).encode()


def wait_until(pred, timeout: float, poll=None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll:
            poll()
        if pred():
            return True
        time.sleep(0.002)
    return pred()


def live(broker, n: int, work: Path) -> dict:
    sub = Counter(broker.port, "tp-live")
    sub.ready.wait(10)
    link, q = _link(broker.url, work / "live" / "alerts.sqlite")
    link.start()
    link.wait_connected(10)
    commits = []
    t0 = time.perf_counter()
    for i in range(n):
        aid, body = _payload(i)
        c0 = time.perf_counter()
        link.publish_alert(aid, f"alanet/tp/w{i % 10}/alert", body)
        commits.append(1000 * (time.perf_counter() - c0))
        if i % 16 == 0:
            link.poll()
    ok = wait_until(lambda: sub.count() >= n and len(q) == 0, 120, link.poll)
    dt = time.perf_counter() - t0
    res = {"alerts": n, "received_unique": sub.count(), "received": sub.received, "queue_left": len(q),
           "seconds": round(dt, 3), "alerts_per_s": round(n / dt, 1), "complete": ok,
           "publish_alert_ms": {"p50": pct(commits, 50), "p99": pct(commits, 99)}}
    link.stop("alanet/tp/status", b'{"state":"offline"}')
    q.close()
    sub.close()
    return res


def backlog(n: int, work: Path) -> dict:
    from conftest import Mosquitto

    broker = Mosquitto(work / "bk-broker-dir")
    (work / "bk-broker-dir").mkdir(parents=True, exist_ok=True)
    broker.start()
    sub = Counter(broker.port, "tp-backlog")  # persistent session: stored while it is away
    sub.ready.wait(10)
    broker.stop()
    link, q = _link(broker.url, work / "backlog" / "alerts.sqlite")
    link.start()
    for i in range(n):
        aid, body = _payload(i)
        link.publish_alert(aid, f"alanet/tp/w{i % 10}/alert", body)
    link.poll()
    queued = len(q)
    t0 = time.perf_counter()
    broker.start()
    wait_until(lambda: link.connected, 60, link.poll)  # paho's reconnect back-off (1-8 s) is not the drain
    t1 = time.perf_counter()
    ok = wait_until(lambda: sub.count() >= n and len(q) == 0, 120, link.poll)
    t2 = time.perf_counter()
    dt = t2 - t1
    res = {"alerts": n, "queued_while_down": queued, "received_unique": sub.count(), "received": sub.received,
           "queue_left": len(q), "reconnect_s": round(t1 - t0, 3), "seconds": round(dt, 3),
           "drain_alerts_per_s": round(n / dt, 1), "complete": ok}
    link.stop("alanet/tp/status", b'{"state":"offline"}')
    q.close()
    sub.close()
    broker.stop()
    return res


def queue_costs(work: Path, batch: int = 16, rounds: int = 12) -> dict:
    """Per-alert cost of the queue's commits: one per alert vs one per batch (same file, interleaved)."""
    import statistics

    from alanet.device.alert_queue import AlertQueue

    q = AlertQueue(work / "costs" / "alerts.sqlite")
    per: dict[str, list[float]] = {"put": [], "put_many": [], "delete": [], "delete_many": []}
    for r in range(rounds):
        for mode in (("one", "many") if r % 2 else ("many", "one")):
            items = [(aid, "alanet/tp/w1/alert", body) for aid, body in (_payload(i) for i in range(batch))]
            t = time.perf_counter()
            if mode == "one":
                for it in items:
                    q.put(*it)
            else:
                q.put_many(items)
            t1 = time.perf_counter()
            if mode == "one":
                for it in items:
                    q.delete(it[0])
            else:
                q.delete_many([it[0] for it in items])
            t2 = time.perf_counter()
            put, dele = ("put", "delete") if mode == "one" else ("put_many", "delete_many")
            per[put].append(1000 * (t1 - t) / batch)
            per[dele].append(1000 * (t2 - t1) / batch)
    q.close()
    med = {k: round(statistics.median(v), 4) for k, v in per.items()}
    return {"batch": batch, "rounds": rounds, "ms_per_alert_median": med,
            "put_over_put_many": round(med["put"] / max(med["put_many"], 1e-9), 1),
            "delete_over_delete_many": round(med["delete"] / max(med["delete_many"], 1e-9), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alerts", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="500 alerts")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    n = 500 if args.quick else args.alerts
    from alanet.device.broker import EmbeddedBroker

    with tempfile.TemporaryDirectory(prefix="alanet-tp-") as tmp, EmbeddedBroker(prefer="mosquitto") as broker:
        work = Path(tmp)
        lv = live(broker, n, work)
        print(f"live: {lv['alerts_per_s']} alerts/s ({lv['received_unique']}/{n} received, queue left "
              f"{lv['queue_left']}), publish_alert p50 {lv['publish_alert_ms']['p50']} ms", flush=True)
        bk = backlog(n, work)
        print(f"backlog: {bk['drain_alerts_per_s']} alerts/s drained after the broker came back "
              f"({bk['received_unique']}/{n})", flush=True)
        qc = queue_costs(work)
        m = qc["ms_per_alert_median"]
        print(f"queue per alert (median of {qc['rounds']} rounds, batches of {qc['batch']}): put {m['put']} ms vs "
              f"put_many {m['put_many']} ms ({qc['put_over_put_many']}×), delete {m['delete']} ms vs delete_many "
              f"{m['delete_many']} ms ({qc['delete_over_delete_many']}×)", flush=True)
    how = ("MqttLink.publish_alert: SQLite commit (WAL, synchronous=FULL) → paho QoS 1 → Mosquitto → QoS 1 "
           f"subscriber; {n} alerts; until all received and the queue empty")
    figs = [
        Figure("mqtt.alerts_per_s", "MQTT alert throughput, durable queue, QoS 1", lv["alerts_per_s"], "alerts/s",
               how, "higher"),
        Figure("mqtt.backlog_drain_per_s", "Queued-alert drain rate after a broker outage", bk["drain_alerts_per_s"],
               "alerts/s", f"{n} alerts queued with the broker down; gateway reconnected → all received, queue empty",
               "higher"),
        Figure("mqtt.commit_ms_p50", "Durable commit + hand-off per alert, p50", lv["publish_alert_ms"]["p50"], "ms",
               "publish_alert() call time (one fsync'd SQLite insert + paho publish)", "lower"),
        Figure("mqtt.lost", "Alerts lost in the throughput runs", (n - lv["received_unique"]) + (n - bk["received_unique"]),
               "alerts", "unique ids expected − received, both runs", ""),
    ]
    qhow = (f"AlertQueue on disk (WAL, synchronous=FULL), {qc['batch']} alerts per round, one commit per alert vs "
            f"one per batch, interleaved, median of {qc['rounds']} rounds")
    m = qc["ms_per_alert_median"]
    figs += [
        Figure("queue.put_ms_per_alert", "Alert queue: put, one commit per alert", m["put"], "ms", qhow, "lower"),
        Figure("queue.put_many_ms_per_alert", "Alert queue: put_many, per alert", m["put_many"], "ms", qhow, "lower"),
        Figure("queue.delete_ms_per_alert", "Alert queue: delete, one commit per alert", m["delete"], "ms", qhow,
               "lower"),
        Figure("queue.delete_many_ms_per_alert", "Alert queue: delete_many, per alert", m["delete_many"], "ms", qhow,
               "lower"),
    ]
    write_result("mqtt_throughput", {"live": lv, "backlog": bk, "queue_costs": qc}, figs, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
