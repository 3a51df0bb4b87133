"""Subcommands of alanet.firmware_bridge (argparse only; implementations are imported lazily)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the ``alanet`` parser."""
    from alanet.main import lazy

    p = sub.add_parser(
        "simulate",
        help="play a session over a serial port as the wearable firmware would",
        description="Play a session (EmoPain-format BD[T,33] .mat/.npy/.csv, or a synthetic one) over a "
        "serial port at the real frame rate x SPEED, speaking wire protocol v1 (firmware_bridge/PROTOCOL.md). "
        "Without --port it creates a pty pair and prints the path to open.",
    )
    p.add_argument("--port", metavar="PATH", help="device path or pyserial URL to write to (default: a new pty)")
    p.add_argument("--session", metavar="FILE", help="session file (.mat with BD, .npy, .csv); default: synthetic")
    p.add_argument("--duration", type=float, metavar="SECONDS", help="session seconds to play (default: whole session, 300 s synthetic)")
    p.add_argument("--speed", type=float, default=1.0, metavar="FACTOR", help="time acceleration (default 1 = real time)")
    p.add_argument(
        "--faults", default="", metavar="SPEC",
        help="fault injection, e.g. 'noise=0.01,bitflip=0.001,drop=0.01,disconnect=30,down=1' "
        "(noise/bitflip/drop: probabilities per packet/byte/frame; disconnect: period in session s; down: seconds unplugged)",
    )  # fmt: skip
    p.add_argument("--truth", metavar="FILE", help="write the ground truth JSON (protective episodes, lost frames)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the synthetic session and faults")
    p.add_argument("--mode", choices=("binary", "csv"), default="binary", help="wire format (default binary)")
    p.add_argument("--baud", type=int, default=115200, help="line rate to pace to (default 115200)")
    p.add_argument("--raw-emg-rate", type=float, default=0.0, metavar="HZ",
                   help="also send RAW_EMG blocks of raw sEMG at HZ (e.g. 1000; needs a fast link, see PROTOCOL.md)")
    p.add_argument("--send-exercise", dest="send_exercise", action="store_true",
                   help="also send EXERCISE packets from the session's exercise column (binary mode)")
    p.add_argument("--device-id", default="alanet-sim", help="device id sent in HELLO")
    p.add_argument("--no-wait", action="store_true", help="do not wait for a reader before streaming on an own pty")
    p.set_defaults(func=lazy("alanet.firmware_bridge.simulator:cmd_simulate"))

    m = sub.add_parser(
        "serial-monitor",
        help="read a wearable's serial port and report what the gateway decodes",
        description="Open PORT (device path or pyserial URL), decode wire protocol v1 (or CSV mode), print each "
        "HELLO with the gateway's verdict and a status line per second; reconnects after unplug. Ctrl-C to stop.",
    )
    m.add_argument("port", metavar="PORT", help="device path (/dev/ttyACM0, a pty) or pyserial URL")
    m.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    m.add_argument("--mode", choices=("binary", "csv"), default="binary", help="wire format (default binary)")
    m.add_argument("--seconds", type=float, default=0.0, help="stop after this many seconds (default: until Ctrl-C)")
    m.add_argument("--json", action="store_true", help="print every decoded packet as a JSON line on stdout")
    m.set_defaults(func=lazy("alanet.firmware_bridge.monitor:cmd_serial_monitor"))
