"""Many gateways through one central broker to one subscriber: alerts/s, latency, saturation.

    python bench/fleet.py [--gateways 10,100,500] [--quick] [--tls] [--plot PNG] [--out JSON]

The central Mosquitto runs from the fleet's configuration (``alanet fleet-config
central``: passwords, the gateway ACL, raised queue limits; TLS with ``--tls``). Each
simulated gateway is the gateway's own publishing path: an
:class:`~alanet.device.mqtt_link.MqttLink` logged in with the gateway id, with its
own :class:`~alanet.device.alert_queue.AlertQueue` (SQLite, WAL, ``synchronous=FULL``,
on tmpfs: every gateway has its own disk in the field, so one shared disk's fsyncs
are not the fleet's bound), a retained online status and two wearables. Alerts
are built by the runtime's ``alert_payload`` (committed to the queue, published QoS 1,
deleted at the PUBACK), live state follows ``state.schema.json`` (QoS 0, one per
wearer every 0.75 s, as a 60 Hz wearable at stride 45 makes). The gateways are driven
by worker processes, each running its clients from one selector loop (paho's
external-loop API), so hundreds of gateways do not need hundreds of threads. The
subscriber is ``alanet alerts``' own ``AlertWatcher`` (alerts QoS 1, state QoS 0,
de-duplication by id) in its own process, logged in as the read-only account.

Per gateway count N:

- realistic: every wearer's state every 0.75 s and an alert every 5 s (several
  times a busy rehab session's rate); end-to-end alert latency p50/p99 from just
  before ``publish_alert`` (queue commit included) to the subscriber's callback;
- ramp: the total alert rate doubles (state as above, underneath) until the
  fleet saturates: alerts are published slower than offered (the load generator or
  the machine is out of CPU), the p99 latency passes 100 ms (a queue builds: the
  broker or the subscriber is out of CPU), or an alert is missing after the drain.
  The last rate before that is the sustained maximum.

CPU seconds of the broker, the subscriber and the load generator per phase say
which one ran out; the broker's CPU time per alert is its cost independent of the
load generator on the same machine. All processes share this machine's cores.
Writes ``bench/results/fleet.json`` (or ``--out``) and, with ``--plot``, a PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import selectors
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, Figure, pct, write_result  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))

STATE_PERIOD_S = 0.75  # one window per wearer at stride 45, 60 Hz
REALISTIC_ALERT_PERIOD_S = 5.0  # per wearer
WEARERS = 2
P99_LIMIT_MS = 100.0
RAMP = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)


# --------------------------------------------------------------------------- payloads (the gateway's schemas)
_TEMPLATES: dict[tuple[str, str], tuple[dict, dict]] = {}


def alert_bytes(gw: str, wearer: str, i: int) -> tuple[str, bytes]:
    """(id, payload) of an alert as the runtime's ``alert_payload`` builds it (raised, cleared, ...; fresh id)."""
    from alanet.device.runtime import utc_now

    t = _TEMPLATES.get((gw, wearer))
    if t is None:
        from alanet.device.decisions import Event
        from alanet.device.runtime import alert_payload

        t = _TEMPLATES[(gw, wearer)] = tuple(
            alert_payload(gw, wearer, Event("protective", st, p, 7.5, 11.25, 14), "protective-fleet-bench", seq=629)
            for st, p in (("raised", 0.83), ("cleared", 0.31)))
    a = dict(t[i % 2], id=str(uuid.uuid4()), time=utc_now(), t_start=i * 7.5, t_end=i * 7.5 + 3.75, window=i * 10 + 4,
             seq=i * 450 + 179)
    return a["id"], json.dumps(a, separators=(",", ":")).encode()


def state_bytes(gw: str, wearer: str, i: int) -> bytes:
    p = 0.5 + 0.4 * ((i * 37) % 11 - 5) / 5
    return json.dumps({"schema": "alanet.state/1", "gateway": gw, "wearer": wearer, "task": "protective",
                       "t_end": round(3.0 + 0.75 * i, 3), "seq": 179 + 45 * i, "window": i,
                       "probabilities": {"normal": round(1 - p, 4), "protective": round(p, 4)},
                       "smoothed": round(p, 4), "state": "active" if p > 0.6 else "none", "inference_ms": 1.05,
                       "model": "protective-fleet-bench"}, separators=(",", ":")).encode()


def status_bytes(gw: str, state: str) -> bytes:
    return json.dumps({"schema": "alanet.status/1", "gateway": gw, "state": state, "model": "protective-fleet-bench",
                       "wearers": {f"w{j + 1}": {"serial": "up"} for j in range(WEARERS)}},
                      separators=(",", ":")).encode()


def check_payloads() -> None:
    """The simulated payloads validate against the gateway's JSON Schemas."""
    import jsonschema

    schemas = REPO / "device" / "schemas"
    for name, payload in (("alert", alert_bytes("gw-0001", "w1", 3)[1]), ("state", state_bytes("gw-0001", "w1", 3)),
                          ("status", status_bytes("gw-0001", "online"))):
        jsonschema.validate(json.loads(payload), json.loads((schemas / f"{name}.schema.json").read_text()))


# --------------------------------------------------------------------------- load generator (worker process)
class SimGateway:
    """One gateway's publishing side: MqttLink + AlertQueue, two wearers."""

    def __init__(self, gw: str, password: str, port: int, ca: str | None, qdir: Path) -> None:
        from alanet.device.alert_queue import AlertQueue
        from alanet.device.config import parse_broker_url
        from alanet.device.flash.protocol import status_topic
        from alanet.device.mqtt_link import MqttLink

        cfg = parse_broker_url(f"{'mqtts' if ca else 'mqtt'}://127.0.0.1:{port}")
        cfg = replace(cfg, username=gw, password=password, ca_file=ca, keepalive=60)
        self.gw = gw
        self.status_topic = status_topic(gw)
        self.queue = AlertQueue(qdir / gw / "alerts.sqlite")
        self.link = MqttLink(cfg, f"alanet-{gw}", self.queue, self.status_topic, status_bytes(gw, "offline"))
        self.alert_topics = [f"alanet/{gw}/w{j + 1}/alert" for j in range(WEARERS)]
        self.state_topics = [f"alanet/{gw}/w{j + 1}/state" for j in range(WEARERS)]
        self.n_alerts = 0
        self.n_states = 0


def _worker(conn: Any, port: int, gws: list[tuple[str, str]], ca: str | None, qdir: str) -> None:
    """Run ``gws`` from one selector loop; obey ("phase", alerts/s, states on, seconds) and ("stop",)."""
    logging.basicConfig(level=logging.ERROR)
    sims = [SimGateway(g, pw, port, ca, Path(qdir)) for g, pw in gws]
    sel = selectors.DefaultSelector()
    for s in sims:
        s.link.client.connect("127.0.0.1", port, keepalive=60)
        sel.register(s.link.client.socket(), selectors.EVENT_READ, s)

    def pump(timeout: float) -> None:
        for key, _ in sel.select(timeout):
            s = key.data
            s.link.client.loop_read()
            s.link.poll()
            if s.link.client.want_write():
                s.link.client.loop_write()

    deadline = time.monotonic() + 60
    while not all(s.link.connected for s in sims) and time.monotonic() < deadline:
        pump(0.05)
    for s in sims:
        s.link.poll()
        s.link.set_retained(s.status_topic, status_bytes(s.gw, "online"))
    import gc

    gc.freeze()  # hundreds of clients in one process: keep gen-2 collections short (a generator artefact)
    conn.send(("ready", sum(s.link.connected for s in sims)))
    last_misc = time.monotonic()
    while True:
        while not conn.poll(0.01):
            pump(0)
        cmd = conn.recv()
        if cmd[0] == "stop":
            break
        _, alert_rate, states_on, seconds = cmd
        n, ns = len(sims), len(sims) * WEARERS
        state_rate = ns / STATE_PERIOD_S if states_on else 0.0
        sent: list[tuple[str, int]] = []
        cpu0 = time.process_time()
        t0 = time.monotonic()
        end = t0 + seconds
        a_i = s_i = 0
        behind = 0.0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due_a = int((now - t0) * alert_rate) - a_i
            due_s = int((now - t0) * state_rate) - s_i
            behind = max(behind, due_a / alert_rate if alert_rate else 0.0)
            for _ in range(max(due_a, 0)):
                s = sims[a_i % n]
                w = (a_i // n) % WEARERS
                aid, body = alert_bytes(s.gw, f"w{w + 1}", s.n_alerts)
                s.n_alerts += 1
                sent.append((aid, time.monotonic_ns()))
                s.link.publish_alert(aid, s.alert_topics[w], body)
                a_i += 1
            for _ in range(max(due_s, 0)):
                k = s_i % ns
                s = sims[k // WEARERS]
                w = k % WEARERS
                s.link.publish(s.state_topics[w], state_bytes(s.gw, f"w{w + 1}", s.n_states), qos=0)
                s.n_states += 1
                s_i += 1
            nxt = min(t0 + (a_i + 1) / alert_rate if alert_rate else end,
                      t0 + (s_i + 1) / state_rate if state_rate else end, end)
            pump(max(0.0, min(nxt - time.monotonic(), 0.005)))
            if now - last_misc > 1.0:
                for s in sims:
                    s.link.client.loop_misc()
                last_misc = now
        elapsed = time.monotonic() - t0
        drain_deadline = time.monotonic() + 30
        while any(len(s.queue) for s in sims) and time.monotonic() < drain_deadline:
            pump(0.005)
        conn.send({"sent": sent, "states": s_i, "seconds": elapsed, "cpu_s": time.process_time() - cpu0,
                   "queued_left": sum(len(s.queue) for s in sims), "max_behind_s": round(behind, 4)})
    for s in sims:
        s.link.client.disconnect()
        s.queue.close()
    conn.close()


# --------------------------------------------------------------------------- subscriber (process)
def _subscriber(conn: Any, url: str, ca: str | None) -> None:
    """``alanet alerts``' AlertWatcher: record (alert id, receive time); count states; answer ("collect",)."""
    import threading

    from alanet.device.alerts import AlertWatcher

    lock = threading.Lock()
    got: list[tuple[str, int]] = []
    states = [0]

    def on_alert(a: dict) -> None:
        t = time.monotonic_ns()
        with lock:
            got.append((a["id"], t))

    def on_state(s: dict) -> None:
        with lock:
            states[0] += 1

    w = AlertWatcher(url, "+", ca_file=ca, on_alert=on_alert, on_state=on_state, client_id="bench-dashboard")
    w.start()
    w.connected.wait(30)
    conn.send(("ready", w.connected.is_set()))
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            break
        with lock:
            out = {"alerts": list(got), "states": states[0], "duplicates": w.duplicates}
            got.clear()
            states[0] = 0
        conn.send(out)
    w.close()


# --------------------------------------------------------------------------- orchestration
def cpu_of(pid: int) -> float:
    """utime + stime of a process, seconds."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class Run:
    """One central broker, one subscriber, N gateways split over worker processes."""

    def __init__(self, n: int, workers: int, tls: bool, root: Path) -> None:
        from fleet_support import Fleet

        self.n = n
        self.fleet = Fleet(root, tls=tls)
        self.sub: Any = None
        self.sub_conn: Any = None
        self.workers: list[tuple[Any, Any]] = []
        self.qdir = Path(tempfile.mkdtemp(prefix="alanet-fleet-q-",
                                          dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        try:
            self._start(n, workers)
        except BaseException:
            self.close()
            raise

    def _start(self, n: int, workers: int) -> None:
        gws = [f"gw-{i:04d}" for i in range(n)]
        for g in gws:
            self.fleet.passwords[g] = uuid.uuid4().hex[:12]
        self.fleet.start()
        ca = self.fleet.ca_file
        ctx = mp.get_context("spawn")
        self.sub_conn, c = ctx.Pipe()
        self.sub = ctx.Process(target=_subscriber, args=(c, self.fleet.central_url("dashboard"), ca), daemon=True)
        self.sub.start()
        if not recv(self.sub_conn, 60, "the subscriber")[1]:
            raise RuntimeError("the subscriber did not connect")
        k = max(1, min(workers, n))
        for w in range(k):
            mine = [(g, self.fleet.passwords[g]) for g in gws[w::k]]
            pc, cc = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(cc, self.fleet.central.port, mine, ca, str(self.qdir)), daemon=True)
            p.start()
            self.workers.append((p, pc))
        connected = sum(recv(pc, 120, "a load-generator process")[1] for _, pc in self.workers)
        if connected != n:
            raise RuntimeError(f"only {connected}/{n} gateways connected")
        time.sleep(0.5)
        self.sub_conn.send(("collect",))
        recv(self.sub_conn, 60, "the subscriber")  # drop what arrived while connecting

    def phase(self, alert_rate: float, seconds: float) -> dict:
        """Offer ``alert_rate`` alerts/s in all (state underneath) for ``seconds``; wait for the drain; measure."""
        k = len(self.workers)
        pids = {"broker": self.fleet.central.proc.pid, "subscriber": self.sub.pid}
        cpu0 = {name: cpu_of(pid) for name, pid in pids.items()}
        gen0 = sum(cpu_of(p.pid) for p, _ in self.workers)
        for _, pc in self.workers:
            pc.send(("phase", alert_rate / k, True, seconds))
        reps = [recv(pc, seconds + 120, "a load-generator process") for _, pc in self.workers]
        sent = dict(a for r in reps for a in r["sent"])
        got: dict[str, int] = {}
        deadline = time.monotonic() + 30
        states = dups = 0
        while True:
            self.sub_conn.send(("collect",))
            d = recv(self.sub_conn, 60, "the subscriber")
            states += d["states"]
            dups += d["duplicates"]
            for aid, t in d["alerts"]:
                got.setdefault(aid, t)
            if all(a in got for a in sent) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        cpu = {name: round(cpu_of(pid) - cpu0[name], 3) for name, pid in pids.items()}
        cpu["load generator"] = round(sum(cpu_of(p.pid) for p, _ in self.workers) - gen0, 3)
        lat = [(got[a] - t) / 1e6 for a, t in sent.items() if a in got]
        seconds_run = max(r["seconds"] for r in reps)
        n_sent = len(sent)
        first = min(sent.values()) if sent else 0
        last = max(got.values()) if got else first
        return {
            "offered_alerts_per_s": alert_rate, "seconds": round(seconds_run, 3), "alerts_sent": n_sent,
            "alerts_received": sum(a in got for a in sent), "missing": sum(a not in got for a in sent),
            "sent_per_s": round(n_sent / seconds_run, 1),
            "delivered_per_s": round(len(lat) / max((last - first) / 1e9, seconds_run), 1),
            "states_sent": sum(r["states"] for r in reps), "states_received": states, "duplicates_dropped": dups,
            "latency_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": pct(lat, 100), "n": len(lat)},
            "generator_max_behind_s": max(r["max_behind_s"] for r in reps),
            "queued_left": sum(r["queued_left"] for r in reps), "cpu_s": cpu,
            "broker_cpu_us_per_alert": round(1e6 * cpu["broker"] / n_sent, 1) if n_sent else None,
            "broker_cpu_us_per_message": round(1e6 * cpu["broker"] / (n_sent + sum(r["states"] for r in reps)), 1)
            if n_sent else None,
            "subscriber_cpu_us_per_message": round(1e6 * cpu["subscriber"] / (len(lat) + states), 1)
            if lat else None,
        }

    def close(self) -> None:
        for p, pc in self.workers:
            try:
                pc.send(("stop",))
            except OSError:
                pass
            p.join(30)
            if p.is_alive():
                p.kill()
        if self.sub is not None:
            try:
                self.sub_conn.send(("stop",))
            except OSError:
                pass
            self.sub.join(10)
            if self.sub.is_alive():
                self.sub.kill()
        self.fleet.stop()
        shutil.rmtree(self.qdir, ignore_errors=True)


def recv(conn: Any, timeout: float, who: str) -> Any:
    """The next message from a child process, or RuntimeError when it does not come."""
    if not conn.poll(timeout):
        raise RuntimeError(f"no answer from {who} in {timeout:g} s")
    return conn.recv()


def saturated(ph: dict) -> str | None:
    """Why a ramp phase counts as saturated (None: sustained)."""
    if ph["missing"]:
        return f"{ph['missing']} alert(s) missing after the drain"
    if ph["sent_per_s"] < 0.95 * ph["offered_alerts_per_s"]:
        return f"published {ph['sent_per_s']:.0f}/s of {ph['offered_alerts_per_s']:.0f}/s offered (load generator out of CPU)"
    p99 = ph["latency_ms"]["p99"]
    if p99 is None or p99 > P99_LIMIT_MS:
        return f"p99 {p99} ms > {P99_LIMIT_MS:g} ms (a queue builds up)"
    return None


def measure(n: int, workers: int, tls: bool, realistic_s: float, ramp_s: float, root: Path) -> dict:
    run = Run(n, workers, tls, root / f"n{n}")
    try:
        rate = n * WEARERS / REALISTIC_ALERT_PERIOD_S
        real = run.phase(rate, realistic_s)
        per_gw_s = {k: v / (n * real["seconds"]) for k, v in real["cpu_s"].items()}  # CPU s per gateway-second
        real["gateways_per_core"] = {k: round(1 / v) if v > 0 else None for k, v in per_gw_s.items()}
        print(f"N={n}: realistic {rate:g} alerts/s + {n * WEARERS / STATE_PERIOD_S:.0f} states/s: alert latency p50 "
              f"{real['latency_ms']['p50']} ms, p99 {real['latency_ms']['p99']} ms, missing {real['missing']}",
              flush=True)
        ramp = []
        why = None
        for r in RAMP:
            ph = run.phase(float(r), ramp_s)
            why = saturated(ph)
            if why and "p99" in why:  # one stall of this shared machine is not saturation: try the step again
                again = run.phase(float(r), ramp_s)
                if saturated(again) is None or again["latency_ms"]["p99"] < ph["latency_ms"]["p99"]:
                    again["retried_after"] = why
                    ph, why = again, saturated(again)
            ph["saturated"] = why
            ramp.append(ph)
            print(f"N={n}: offered {r}/s: sent {ph['sent_per_s']}/s delivered {ph['delivered_per_s']}/s, p50 "
                  f"{ph['latency_ms']['p50']} ms p99 {ph['latency_ms']['p99']} ms; cpu {ph['cpu_s']}"
                  f"{'  SATURATED: ' + why if why else ''}", flush=True)
            if why:
                break
        ok = [p for p in ramp if not p["saturated"]]
        if why and ok:  # one step between the last sustained rate and the saturated one
            mid = round((ok[-1]["offered_alerts_per_s"] * ramp[-1]["offered_alerts_per_s"]) ** 0.5, -1)
            ph = run.phase(mid, ramp_s)
            ph["saturated"] = saturated(ph)
            print(f"N={n}: offered {mid:g}/s: sent {ph['sent_per_s']}/s delivered {ph['delivered_per_s']}/s, p50 "
                  f"{ph['latency_ms']['p50']} ms p99 {ph['latency_ms']['p99']} ms"
                  f"{'  SATURATED: ' + ph['saturated'] if ph['saturated'] else ''}", flush=True)
            ramp.insert(len(ramp) - 1, ph)
            if not ph["saturated"]:
                ok.append(ph)
            else:
                why = ph["saturated"]
        best = ok[-1] if ok else None
        return {"gateways": n, "wearers_per_gateway": WEARERS, "realistic": real, "ramp": ramp,
                "sustained_alerts_per_s": best["delivered_per_s"] if best else None,
                "sustained_offered": best["offered_alerts_per_s"] if best else None,
                "saturated_at_offered": min(p["offered_alerts_per_s"] for p in ramp if p["saturated"]) if why else None,
                "saturation": why}
    finally:
        run.close()


def plot(results: list[dict], path: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, r in enumerate(results):
        c = f"C{k}"
        ramp = sorted(r["ramp"], key=lambda p: p["offered_alerts_per_s"])
        xs = [p["offered_alerts_per_s"] for p in ramp]
        sat = [p for p in ramp if p["saturated"]]
        a.plot(xs, [p["delivered_per_s"] for p in ramp], "o-", color=c, label=f"{r['gateways']} gateways")
        b.plot(xs, [p["latency_ms"]["p99"] for p in ramp], "o-", color=c, label=f"{r['gateways']} gw p99")
        b.plot(xs, [p["latency_ms"]["p50"] for p in ramp], "x--", color=c, alpha=0.6, label=f"{r['gateways']} gw p50")
        for ax, key in ((a, "delivered_per_s"), (b, None)):
            ys = [p[key] if key else p["latency_ms"]["p99"] for p in sat]
            ax.plot([p["offered_alerts_per_s"] for p in sat], ys, "o", color="white", mec=c, mew=1.5, ms=7)
    top = max(p["offered_alerts_per_s"] for r in results for p in r["ramp"])
    a.plot([100, top], [100, top], ":", color="grey", label="delivered = offered")
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("offered alerts/s, all gateways (live state underneath)")
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    a.set_ylabel("alerts/s delivered to the subscriber")
    b.axhline(P99_LIMIT_MS, color="red", lw=0.8, ls=":")
    b.set_ylabel("end-to-end alert latency, ms")
    a.legend(fontsize=8, title="hollow: saturated", title_fontsize=8)
    b.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Gateways → one Mosquitto → one subscriber ({note})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def figures(results: list[dict], workers: int, tls: bool, realistic_s: float, ramp_s: float) -> list[Figure]:
    """The runner's figures from the per-N results."""
    how_real = (f"{{n}} simulated gateways (MqttLink + SQLite queue on tmpfs, {WEARERS} wearers each: state every "
                f"{STATE_PERIOD_S} s QoS 0, an alert every {REALISTIC_ALERT_PERIOD_S:g} s QoS 1) → central Mosquitto "
                f"(fleet config{', TLS' if tls else ''}, ACL) → AlertWatcher; {realistic_s:g} s; "
                "publish_alert → subscriber callback")
    how_ramp = (f"alert rate doubled from {RAMP[0]}/s ({ramp_s:g} s per step, state underneath) until published < 95 % "
                f"of offered, p99 > {P99_LIMIT_MS:g} ms or an alert missing; last sustained step's delivered rate; "
                f"{workers} load-generator processes, broker and subscriber share the machine")
    how_cpu = ("{n} gateways, realistic phase: {what}, from the process's utime+stime (an extrapolation to a core of "
               "its own; an alert is a QoS 1 publish in and out with both PUBACKs)")
    figs = []
    for r in results:
        n, real = r["gateways"], r["realistic"]
        figs += [
            Figure(f"fleet.n{n}.alert_p50_ms", f"Fleet, {n} gateways: alert latency p50 (realistic load)",
                   real["latency_ms"]["p50"], "ms", how_real.format(n=n)),
            Figure(f"fleet.n{n}.alert_p99_ms", f"Fleet, {n} gateways: alert latency p99 (realistic load)",
                   real["latency_ms"]["p99"], "ms", how_real.format(n=n) + f"; n={real['latency_ms']['n']}"),
            Figure(f"fleet.n{n}.sustained_alerts_per_s", f"Fleet, {n} gateways: sustained alerts/s",
                   r["sustained_alerts_per_s"], "alerts/s", how_ramp + f"; stopped: {r['saturation']}", "higher"),
            Figure(f"fleet.n{n}.lost", f"Fleet, {n} gateways: alerts missing (all phases)",
                   real["missing"] + sum(p["missing"] for p in r["ramp"]), "alerts", "sent − received after drain", ""),
        ]
        if n < 100:  # CPU times tick at 10 ms: too few messages here to say much
            continue
        for who, key in (("broker", "broker"), ("one subscriber (AlertWatcher, with state)", "subscriber")):
            figs.append(Figure(f"fleet.n{n}.{key}_us_per_message", f"Fleet, {n} gateways: {who} CPU per message",
                               real[f"{key}_cpu_us_per_message"], "µs",
                               how_cpu.format(n=n, what="CPU seconds ÷ (alerts + states)")))
            figs.append(Figure(f"fleet.n{n}.{key}_gateways_per_core",
                               f"Fleet, {n} gateways: gateways per core of the {who}, realistic load",
                               real["gateways_per_core"][key], "gateways",
                               how_cpu.format(n=n, what="N × seconds ÷ CPU seconds"), "higher"))
    return figs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", default="10,100,500", help="comma-separated gateway counts (default %(default)s)")
    ap.add_argument("--workers", type=int, default=2, help="load-generator processes (default %(default)s)")
    ap.add_argument("--tls", action="store_true", help="TLS between gateways/subscriber and the broker")
    ap.add_argument("--quick", action="store_true", help="shorter phases")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="also draw delivered rate and latency to this PNG")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    try:
        counts = [int(x) for x in args.gateways.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--gateways: not a list of integers: {args.gateways!r}")
    if not counts or min(counts) < 1:
        ap.error("--gateways: give counts >= 1")
    check_payloads()
    realistic_s, ramp_s = (5.0, 2.0) if args.quick else (15.0, 4.0)
    results = []
    with tempfile.TemporaryDirectory(prefix="alanet-fleet-") as tmp:
        for n in counts:
            results.append(measure(n, args.workers, args.tls, realistic_s, ramp_s, Path(tmp)))
    figs = figures(results, args.workers, args.tls, realistic_s, ramp_s)
    doc = {"workers": args.workers, "tls": args.tls, "quick": args.quick, "p99_limit_ms": P99_LIMIT_MS,
           "ramp": list(RAMP), "results": results}
    path = write_result("fleet", doc, figs, args.out)
    if args.plot:
        plot(results, args.plot, f"{os.cpu_count()} CPUs shared by broker, subscriber and load generator"
             f"{', TLS' if args.tls else ''}")
        print(f"plot: {args.plot}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
