"""``alanet live`` (argparse only; the server is imported lazily)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``alanet live`` to the parser."""
    from alanet.main import lazy

    p = sub.add_parser(
        "live",
        help="live feedback page (or terminal view) for gateways' MQTT topics",
        description="Subscribe to alanet/# on an MQTT broker and show, per wearer, the protective-behaviour "
        "probability trace with the alert threshold, the pain-level estimate, active alerts, what drove them, "
        "the gateway's link and model status, and rehab sessions (exercise, start/stop, timeline, report, "
        "history, a full-screen patient view): as a web page (Server-Sent Events, all assets local) or, with "
        "--terminal, as a refreshing text table.",
    )
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://[user[:pass]@]host[:port] or mqtts://…")
    p.add_argument("--ca-file", dest="ca_file", metavar="PATH", help="CA certificate for mqtts:// (default: the system's)")
    p.add_argument("--http-port", type=int, default=8080, metavar="N", help="port of the web page (default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1; 0.0.0.0 to reach it from a tablet)")
    p.add_argument("--gateway", metavar="ID", help="only this gateway (default: every gateway on the broker)")
    p.add_argument("--read-only", dest="read_only", action="store_true",
                   help="watch only: no exercise or session commands, no patient-view settings from the page")
    p.add_argument("--max-clients", dest="max_clients", type=int, default=32, metavar="N",
                   help="most open live pages (event streams) at a time; more get 503 and retry (default 32)")
    p.add_argument("--idle-timeout", dest="idle_timeout", type=float, default=15.0, metavar="S",
                   help="close a connection idle (or sending a request this slowly) for S seconds (default 15)")
    p.add_argument("--data-dir", dest="data_dir", metavar="DIR",
                   help="where session logs fetched for reports and the patient-view settings are kept "
                   "(default ~/.local/state/alanet/live, /var/lib/alanet/live as root)")
    p.add_argument("--terminal", action="store_true", help="no web page: a refreshing text table on stdout")
    p.add_argument("--refresh", type=float, default=1.0, metavar="S", help="terminal refresh interval (default 1 s)")
    p.add_argument("--once", action="store_true", help="with --terminal: print one table after --refresh s and exit")
    p.set_defaults(func=lazy("alanet.device.live.server:cmd_live"))
