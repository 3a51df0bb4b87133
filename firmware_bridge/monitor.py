"""``alanet serial-monitor``: read a wearable's port and show what the gateway would see.

For firmware bring-up: prints each HELLO (and whether a gateway would accept it), a
status line per second (frames/s, errors, gaps), optionally every packet as a JSON
line, and the decoder's counters at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import sys
import time
from typing import Any

from alanet.firmware_bridge.codec import Decoder
from alanet.firmware_bridge.csv_mode import CsvDecoder
from alanet.firmware_bridge.port import SerialLink
from alanet.firmware_bridge.protocol import Exercise, Frame, Hello, RawEmg, hello_problem


def packet_json(p: Frame | Hello | RawEmg | Exercise) -> str:
    """One JSON line for a decoded packet: ``{"type": "DATA", ...fields}``."""
    kind = {Frame: "DATA", Hello: "HELLO", RawEmg: "RAW_EMG", Exercise: "EXERCISE"}[type(p)]
    return json.dumps({"type": kind, **dataclasses.asdict(p)})


def cmd_serial_monitor(args: Any) -> int:
    dec: Decoder | CsvDecoder = CsvDecoder() if args.mode == "csv" else Decoder()
    chunks: queue.Queue[bytes] = queue.Queue()
    err = sys.stderr
    link = SerialLink(args.port, args.baud, on_data=chunks.put, on_state=lambda s: print(f"link {s}", file=err, flush=True))
    deadline = time.monotonic() + args.seconds if args.seconds else math.inf
    last_report, last_frames = time.monotonic(), 0
    link.start()
    try:
        while time.monotonic() < deadline:
            try:
                data = chunks.get(timeout=0.1)
            except queue.Empty:
                data = b""
            for p in dec.feed(data):
                if args.json:
                    print(packet_json(p), flush=False)
                if isinstance(p, Hello):
                    problem = hello_problem(p)
                    verdict = f"REFUSED: {problem}" if problem else "accepted"
                    print(f"HELLO {p.device_id!r} fw {p.firmware!r} v{p.protocol_version} {p.layout!r} "
                          f"{p.n_angles}+{p.n_emg} ch @ {p.sample_rate_hz:g} Hz -> {verdict}", file=err)  # fmt: skip
                elif isinstance(p, Exercise):
                    print(f"EXERCISE {p.name or 'none'} (code {p.code})", file=err)
            now = time.monotonic()
            if now - last_report >= 1.0:
                s = dec.stats
                rate = (s.frames - last_frames) / (now - last_report)
                print(f"{rate:6.1f} frames/s  frames {s.frames}  lost {s.lost}  crc {s.crc_errors}  "
                      f"framing {s.framing_errors}  malformed {s.malformed}  unsupported {s.unsupported}", file=err)  # fmt: skip
                last_report, last_frames = now, s.frames
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        link.stop()
    sys.stdout.flush()
    print(json.dumps({"stats": dec.stats.as_dict(), "link": {"reconnects": link.reconnects, "last_error": link.last_error}}), file=err)
    return 0
