"""``alanet live --terminal``: the live feedback as a refreshing text table (no browser needed)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from alanet.device.config import BrokerConfig
from alanet.device.live.store import LiveStore
from alanet.device.live.subscriber import Subscriber, topics_for

BARS = "▁▂▃▄▅▆▇█"
SPARK_LEN = 32
CLEAR = "\x1b[H\x1b[2J"


def sparkline(values: list[float | None], threshold: float | None = None, width: int = SPARK_LEN) -> str:
    """The last ``width`` probabilities (0..1) as block characters."""
    out = []
    for v in [v for v in values if v is not None][-width:]:
        out.append(BARS[min(len(BARS) - 1, max(0, int(v * len(BARS))))])
    return "".join(out).ljust(width)


def _ago(now: float, t: float | None) -> str:
    if t is None:
        return "never"
    s = max(0.0, now - t)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago"


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def render(snap: dict[str, Any], color: bool = False) -> str:
    """One screen of text from a :meth:`LiveStore.snapshot` (``*`` after the exercise: a session is running)."""
    now = snap["now"]
    red, bold, dim, reset = ("\x1b[1;31m", "\x1b[1m", "\x1b[2m", "\x1b[0m") if color else ("", "", "", "")
    link = snap["link"]
    lines = [f"{bold}ALANet live{reset}  broker {snap.get('broker') or '?'}: {link['state']}"
             f"{' - ' + link['detail'] if link['state'] != 'connected' and link.get('detail') else ''}"
             f"  ({time.strftime('%H:%M:%S', time.localtime(now))})"]
    if not snap["gateways"]:
        lines.append(f"{dim}no gateway seen yet{reset}")
    for gid, g in snap["gateways"].items():
        st = g.get("status") or {}
        c = st.get("counters") or {}
        online = {True: "online", False: f"{red}OFFLINE{reset}", None: "unknown"}[g.get("online")]
        counters = "  ".join(f"{k} {c[k]:.2f}" if isinstance(c[k], float) else f"{k} {c[k]}"
                             for k in ("frames", "crc_errors", "gaps", "windows", "inference_ms", "queue_depth") if k in c)
        lines.append("")
        lines.append(f"{bold}gateway {gid}{reset}  {online}  model {g.get('model_id') or '-'}  "
                     f"threshold {g['threshold']:.2f}  status {_ago(now, g.get('last_status'))}")
        if counters:
            lines.append(f"  {counters}")
        wearers = [w for w in snap["wearers"] if w["gateway"] == gid]
        if wearers:
            lines.append(f"  {'WEARER':<12} {'P(protective)':<14} {'TRACE (last ' + str(SPARK_LEN) + ')':<{SPARK_LEN}}  "
                         f"{'PAIN':<10} {'WINDOWS':>7}  {'LINK':<9} {'EXERCISE':<15} ALERT")
        for w in wearers:
            p = w.get("probability")
            ptxt = f"{p:.2f}" if p is not None else "-"
            if p is not None and p >= g["threshold"]:
                ptxt += " ^"
            trace = sparkline([s[1] for s in w.get("trace", [])])
            pain = (w.get("pain") or {}).get("label") or (w.get("pain") or {}).get("leading") or "-"
            alerts = [f"{red}!! {a['type'].upper()} {a['state']} since {_clock(a.get('received'))}{reset}"
                      for a in w.get("active", [])]
            ws = (st.get("wearers") or {}).get(w["wearer"]) or {}
            serial = "offline" if g.get("online") is False else str(ws.get("serial") or "-")
            stale = "" if w.get("last_state") and now - w["last_state"] < 5 else f" {dim}(no data {_ago(now, w.get('last_state'))}){reset}"
            ex = (w.get("exercise") or "-") + (" *" if (w.get("session") or {}).get("state") == "active" else "")
            lines.append(f"  {w['wearer']:<12} {ptxt:<14} {trace}  {pain:<10} {w['samples']:>7}  {serial:<9} {ex:<15} "
                         f"{'; '.join(alerts) if alerts else 'none'}{stale}")
    return "\n".join(lines) + "\n"


def run_terminal(broker: BrokerConfig, gateway: str | None = None, interval: float = 1.0, once: bool = False,
                 out: TextIO | None = None) -> int:
    """Subscribe and redraw every ``interval`` s until Ctrl-C/SIGTERM (``once``: one table, then exit)."""
    from alanet.device.live.server import wait_for_stop

    out = out or sys.stdout
    store = LiveStore()
    store.broker = f"{'mqtts' if broker.tls else 'mqtt'}://{broker.host}:{broker.port}"
    sub = Subscriber(broker, topics_for(gateway), store.ingest, store.set_link)
    sub.start()
    tty = out.isatty()

    def draw() -> None:
        text = render(store.snapshot(), color=tty)
        out.write((CLEAR + text) if tty else (text + "\n"))
        out.flush()

    try:
        if once:
            time.sleep(interval)
            draw()
        else:
            wait_for_stop(draw, interval)
    finally:
        sub.stop()
    return 0
