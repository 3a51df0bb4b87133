"""Subcommands of alanet.device (argparse only; implementations are imported lazily)."""

from __future__ import annotations

import argparse

from alanet.main import lazy


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the ``alanet`` parser."""
    p = sub.add_parser(
        "run", help="run the gateway: serial wearable(s) → model → alerts over MQTT",
        description="Run the gateway: read the wearable(s) on serial ports, classify every window with the "
        "bundle's model (LiteRT), decide alerts and publish them over MQTT (durable queue, QoS 1). "
        "Settings come from a TOML file (see device/gateway.example.toml) and the flags below, which win.")
    p.add_argument("--config", metavar="FILE", help="gateway TOML file")
    p.add_argument("--port", help="serial port of the wearable (device path or pyserial URL); replaces [[wearable]]")
    p.add_argument("--baud", type=int, help="baud rate (default 115200)")
    p.add_argument("--bundle", help="model bundle directory or archive")
    p.add_argument("--broker", help="mqtt://[user[:pass]@]host[:port] or mqtts://... (default mqtt://127.0.0.1:1883)")
    p.add_argument("--gateway", help="gateway id used in topics (default: host name)")
    p.add_argument("--wearer", help="wearer pseudonym used in topics (default w1)")
    p.add_argument("--state-dir", dest="state_dir", help="where the alert queue lives (default ~/.local/state/alanet)")
    p.add_argument("--check", action="store_true", help="check the config and the bundle, then exit")
    p.set_defaults(func=lazy("alanet.device.runtime:cmd_run"))

    p = sub.add_parser(
        "report", help="make a rehab session's report (self-contained HTML + CSV) from its log",
        description="Read a session log written by the gateway (<state_dir>/sessions/<wearer>/<session>.jsonl) and "
        "write its report: a self-contained HTML page (timeline with episodes and exercises, protective time and "
        "episodes per exercise, pain-level distribution, model and data-quality notes; no network needed to open "
        "it) and a CSV with one row per window. The gateway writes the same files when a session stops.")
    p.add_argument("session", metavar="SESSION", help="session log (.jsonl) or session id (looked up in --state-dir)")
    p.add_argument("--state-dir", dest="state_dir", help="gateway state directory to find a session id in "
                   "(default ~/.local/state/alanet, /var/lib/alanet as root)")
    p.add_argument("--out", metavar="FILE.html", help="report to write (default: next to the log); the CSV goes "
                   "beside it")
    p.add_argument("--no-csv", dest="no_csv", action="store_true", help="write the HTML report only")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=lazy("alanet.device.report:cmd_report"))

    p = sub.add_parser(
        "alerts", help="print a gateway's alerts and live state from the broker",
        description="Subscribe to alanet/<gateway>/... and print alerts (de-duplicated by id), live state and "
        "gateway status in readable form.")
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (default %(default)s)")
    p.add_argument("--gateway", default="+", help="gateway id (default: all gateways)")
    p.add_argument("--ca-file", dest="ca_file", help="CA certificate for mqtts://")
    p.add_argument("--session", metavar="CLIENT_ID",
                   help="persistent session under this client id: the broker keeps the alerts published while "
                   "this command (or the link to it) is down and delivers them when it is back")
    p.add_argument("--no-state", dest="state", action="store_false", help="alerts and status only")
    p.add_argument("--json", action="store_true", help="print the raw JSON payloads, one per line")
    p.add_argument("--count", type=int, default=0, help="exit after this many alerts (0: run until Ctrl-C)")
    p.add_argument("--timeout", type=float, default=0.0, help="exit after this many seconds (0: never)")
    p.set_defaults(func=lazy("alanet.device.alerts:cmd_alerts"))

    p = sub.add_parser(
        "demo", help="one-command demo: simulated wearable → gateway → broker → alerts (no hardware)",
        description="Start an embedded MQTT broker, the firmware simulator on a virtual serial port playing a "
        "synthetic rehab session with protective episodes, the gateway with the shipped protective bundle and a "
        "subscriber; print alerts as they come and a summary against the simulator's ground truth.")
    p.add_argument("--duration", type=float, default=480.0, help="session length in simulated seconds (default %(default)s)")
    p.add_argument("--speed", type=float, default=6.0, help="playback speed factor (default %(default)s)")
    p.add_argument("--bundle", help="model bundle (default: the shipped models/protective-demo)")
    p.add_argument("--seed", type=int, default=7, help="session seed (default %(default)s)")
    p.add_argument("--broker", help="use this broker instead of starting one (mqtt://host:port)")
    p.add_argument("--keep", metavar="DIR", help="keep the run's files (config, queue, truth, alerts) in DIR")
    p.set_defaults(func=lazy("alanet.device.demo:cmd_demo"))
